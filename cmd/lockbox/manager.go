package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lockbox-project/lockbox/manager"
	"github.com/lockbox-project/lockbox/manager/etcd"
)

func addManagerCommand(root *cobra.Command) {
	var (
		cfg       manager.Config
		endpoints string
		etcdTLS   etcd.TLSFiles
		logs      logFlags
		token     tokenFlags
	)
	cmd := &cobra.Command{
		Use:   "manager --data-dir DIR [--join ADDR --token-file FILE|-]",
		Short: "Run a manager (the first start initialises a cluster, or joins one with --join)",
		Long: `Run a Lockbox manager.

The first start with an empty --data-dir creates a cluster: root CA, data keys,
join tokens and admin credentials (under DIR/admin). With --join ADDR
--token-file FILE it joins an existing cluster instead, with the manager join
token read once from FILE (or from standard input with --token-file -) and
zeroed once joined; the token is never taken from the command line or the
environment, which stay readable in /proc while the manager runs. Later
starts need only --data-dir.

Ports: --listen (default ` + manager.DefaultListenAddr + `) serves nodes, managers and
admin certificates over mutual TLS; the embedded etcd member's peers use the
next port on the advertised address. The admin socket (default
` + manager.DefaultAdminSocket + `) is for root only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := token.check(cmd.Flags()); err != nil {
				return err
			}
			if err := logs.check(); err != nil {
				return err
			}
			tok, err := token.read(cmd.InOrStdin())
			if err != nil {
				return err
			}
			cfg.JoinToken = tok
			if cfg.Logger, err = logs.logger(cmd.ErrOrStderr()); err != nil {
				clear(tok)
				return err
			}
			if endpoints != "" {
				cfg.EtcdEndpoints = strings.Split(endpoints, ",")
				if etcdTLS.CertFile != "" {
					cfg.EtcdTLS = &etcdTLS
				}
			}
			if cfg.EtcdLogger, err = logs.etcdLogger(cmd.ErrOrStderr()); err != nil {
				clear(tok)
				return err
			}
			cfg.Out = cmd.OutOrStdout()
			m, err := manager.New(cfg)
			if err != nil {
				clear(tok)
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// A join zeroes the token itself, a restart never reads it:
			// either way nothing needs it once the manager is up (or gone).
			ran := make(chan struct{})
			go func() {
				select {
				case <-m.Ready():
				case <-ran:
				}
				clear(tok)
			}()
			err = m.Run(ctx)
			close(ran)
			if err != nil {
				return fmt.Errorf("%w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the manager's state (required; 0700)")
	f.StringVar(&cfg.ListenAddr, "listen", manager.DefaultListenAddr, "TCP address for nodes, managers and admin certificates (mutual TLS)")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "host:port others dial (default: --listen, or the first non-loopback address)")
	f.StringVar(&cfg.AdminSocket, "admin-socket", manager.DefaultAdminSocket, "root-only unix socket for the admin API ('' to disable)")
	f.BoolVar(&cfg.Autolock, "autolock", false, "wrap the data keys with an unlock key printed once; a restarted manager waits for 'lockbox unlock'")
	f.StringVar(&cfg.JoinAddr, "join", "", "address of a manager of the cluster to join (first start only)")
	token.add(f, "file holding the manager join token for --join")
	f.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated client URLs of an external etcd cluster (default: embedded member)")
	f.StringVar(&etcdTLS.CAFile, "etcd-cafile", "", "CA of the external etcd cluster")
	f.StringVar(&etcdTLS.CertFile, "etcd-certfile", "", "client certificate for the external etcd cluster")
	f.StringVar(&etcdTLS.KeyFile, "etcd-keyfile", "", "client key for the external etcd cluster")
	f.IntVar(&cfg.EtcdPeerPort, "etcd-peer-port", 0, "embedded etcd peer port (default: the --listen port plus one)")
	f.DurationVar(&cfg.HeartbeatPeriod, "heartbeat-period", 0, "heartbeat period told to agents (default 5s)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics (plain HTTP, no authentication: bind to loopback or a management network; default off)")
	logs.add(f)
	cmd.MarkFlagRequired("data-dir")
	root.AddCommand(cmd)
}
