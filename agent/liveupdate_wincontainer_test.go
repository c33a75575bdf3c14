package agent

import (
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
)

// winMsg places service web (live update on) with secret id at target
// db_pw, as a Windows service's grants are: no uid, gid or mode.
func winMsg(typ dispatcher.SessionMessage_Type, rev uint64, id, data string) *dispatcher.SessionMessage {
	svc := &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Service{Service: &dispatcher.ServiceGrants{
		ServiceId: "svc1", ServiceName: "web", LiveUpdate: true, Grants: []*dispatcher.Grant{
			{SecretId: id, SecretName: "db_pw", Target: &types.FileTarget{Name: "db_pw"}},
		}}}}}
	sec := &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Secret{
		Secret: &dispatcher.SecretData{Id: id, Name: "db_pw", Data: []byte(data)}}}}
	return &dispatcher.SessionMessage{Type: typ, Revision: rev, NodeId: "node-7", Changes: []*dispatcher.AssignmentChange{sec, svc}}
}
