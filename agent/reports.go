package agent

import (
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// Reporter takes what happened to a container's secrets for the managers'
// audit log: the session's Report, which the next heartbeat carries. Names
// only; never secret data.
type Reporter interface {
	Report(*dapi.MountReport)
}

// reportMounted reports that container id got the secrets named, with
// their IDs (the versions `lockbox service ps` shows), in the same order.
func (a *Agent) reportMounted(id, service string, secrets, ids []string) {
	if a.reports != nil {
		a.reports.Report(&dapi.MountReport{Event: dapi.MountReport_MOUNTED, ContainerId: id, ServiceName: service, SecretNames: secrets, SecretIds: ids})
	}
}

// reportWiped reports that container id's secrets were wiped.
func (a *Agent) reportWiped(id, service string) {
	if a.reports != nil {
		a.reports.Report(&dapi.MountReport{Event: dapi.MountReport_WIPED, ContainerId: id, ServiceName: service})
	}
}
