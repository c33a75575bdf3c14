package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/daemonflags"
	"github.com/lockbox-project/lockbox/manager"
	"github.com/lockbox-project/lockbox/manager/etcd"
)

func addManagerCommand(root *cobra.Command) {
	var (
		cfg       manager.Config
		endpoints string
		etcdTLS   etcd.TLSFiles
		logs      daemonflags.Log
		token     daemonflags.Token
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
			if err := token.Check(cmd.Flags()); err != nil {
				return err
			}
			if err := logs.Check(); err != nil {
				return err
			}
			tok, err := token.Read(cmd.InOrStdin())
			if err != nil {
				return err
			}
			cfg.JoinToken = tok
			if cfg.Logger, err = logs.Logger(cmd.ErrOrStderr()); err != nil {
				clear(tok)
				return err
			}
			if endpoints != "" {
				cfg.EtcdEndpoints = strings.Split(endpoints, ",")
				if etcdTLS.CertFile != "" {
					cfg.EtcdTLS = &etcdTLS
				}
			}
			if cfg.EtcdLogger, err = etcdLogger(&logs, cmd.ErrOrStderr()); err != nil {
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
	token.Add(f, "file holding the manager join token for --join")
	f.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated client URLs of an external etcd cluster (default: embedded member)")
	f.StringVar(&etcdTLS.CAFile, "etcd-cafile", "", "CA of the external etcd cluster")
	f.StringVar(&etcdTLS.CertFile, "etcd-certfile", "", "client certificate for the external etcd cluster")
	f.StringVar(&etcdTLS.KeyFile, "etcd-keyfile", "", "client key for the external etcd cluster")
	f.IntVar(&cfg.EtcdPeerPort, "etcd-peer-port", 0, "embedded etcd peer port (default: the --listen port plus one)")
	f.DurationVar(&cfg.HeartbeatPeriod, "heartbeat-period", 0, "heartbeat period told to agents (default 5s)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics (plain HTTP, no authentication: bind to loopback or a management network; default off)")
	logs.Add(f)
	cmd.MarkFlagRequired("data-dir")
	root.AddCommand(cmd)
}

// etcdLogger is the embedded etcd member's zap logger, in the format l asks
// for and with slog's key names (time, level, msg), so that one parser reads
// the manager's whole log. etcd logs at error level and above only: its
// info lines are many and for etcd's developers; --log-level debug lowers
// that to warn.
func etcdLogger(l *daemonflags.Log, w io.Writer) (*zap.Logger, error) {
	lv, err := l.Level()
	if err != nil {
		return nil, err
	}
	zl := zapcore.ErrorLevel
	if lv <= slog.LevelDebug {
		zl = zapcore.WarnLevel
	}
	ec := zapcore.EncoderConfig{
		TimeKey: "time", LevelKey: "level", NameKey: "logger", MessageKey: "msg",
		StacktraceKey: "", LineEnding: zapcore.DefaultLineEnding,
		EncodeLevel: zapcore.CapitalLevelEncoder, EncodeTime: zapcore.RFC3339NanoTimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
	}
	var enc zapcore.Encoder
	if l.JSON() {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.ConsoleSeparator = " "
		enc = zapcore.NewConsoleEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), zl)
	return zap.New(core).With(zap.String("part", "etcd")), nil
}
