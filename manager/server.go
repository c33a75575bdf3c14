package manager

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	caapi "github.com/lockbox-project/lockbox/api/ca"
	clusterapi "github.com/lockbox-project/lockbox/api/cluster"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/dispatcher"
)

func (m *Manager) tcpServer(adminSrv *admin.Server) (*grpc.Server, error) {
	own, err := m.nodeKey.pair()
	if err != nil {
		return nil, err
	}
	m.own.Store(&own)
	c := m.ca()
	az := &authorizer{ca: m.ca, locked: m.keys.Locked}
	s := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(c.ServerTLS(m.own.Load))),
		// Counted first, so that refusals count too; the rate limit
		// comes before any work.
		grpc.ChainUnaryInterceptor(m.adminMetrics.unary, newPeerLimiter(m.cfg.UnauthRate, m.cfg.UnauthBurst).unary, az.unary),
		grpc.ChainStreamInterceptor(az.stream),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Thousands of mostly idle agent connections: see grpclimits.go.
		grpc.WriteBufferSize(writeBufferSize),
		grpc.ReadBufferSize(readBufferSize),
		// The dispatcher sends session messages pre-encoded, each change
		// marshalled once per fan-out for every node.
		grpc.ForceServerCodecV2(dispatcher.Codec{}),
	)
	caapi.RegisterNodeCAServer(s, ca.NewServer(c, registrar{m}, m.managerList, m.log))
	dapi.RegisterDispatcherServer(s, m.disp)
	adminapi.RegisterAdminServer(s, adminSrv)
	clusterapi.RegisterClusterServer(s, &clusterServer{m: m})
	return s, nil
}
