package agent

import (
	"slices"

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

// Containers lists, sorted, the containers the agent holds secrets for, by
// ID: the session's inventory for the managers (agent/session). The order
// of its map and its reports is what makes an inventory taken after a
// batch of reports agree with it: Prepare holds a container before it
// reports it MOUNTED, and a release forgets it before it reports it WIPED.
func (a *Agent) Containers() []string {
	a.mu.Lock()
	ids := make([]string, 0, len(a.held))
	for id := range a.held {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	slices.Sort(ids)
	return ids
}
