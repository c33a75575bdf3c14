package manager

import (
	"log/slog"

	"golang.org/x/sys/unix"
)

// minOpenFiles is what a manager wants for its descriptors: every agent
// holds one TLS connection, and etcd needs its own files and peers on top.
// (Go already raises the soft limit to the hard one at start.)
const minOpenFiles = 65536

// warnOpenFiles tells the operator when the descriptor limit caps the
// number of agents: running out makes etcd fail, which stops the manager.
func warnOpenFiles(log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < minOpenFiles {
		log.Warn("the open-files limit caps how many agents this manager can serve (one connection each); raise it (systemd LimitNOFILE)",
			"limit", lim.Cur, "recommended", minOpenFiles)
	}
}
