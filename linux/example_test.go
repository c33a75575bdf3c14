//go:build linux

package linux_test

import (
	"context"
	"log"

	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
)

// The agent's side of a container's life: plan, build, attach by pid (NRI
// StartContainer) or hand the fds to a hook, wipe when the container stops.
func Example() {
	ctx := context.Background()
	var src mounter.SecretSource // the agent's grant cache in locked memory
	plan, err := mounter.NewPlan(mounter.Linux, []mounter.Grant{
		{SecretID: "k3xq", SecretName: "db_pw", UID: "1000", Mode: 0o400, Size: 16},
		{SecretID: "p9zt", SecretName: "tls_key", Target: "/etc/ssl/private/app.key", Size: 1700},
	})
	if err != nil {
		log.Fatal(err) // a *mounter.ValidationError naming the secret and field
	}
	m, err := linux.New().BuildTmpfs(ctx, plan, src)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Wipe()

	// Either attach from the agent, entering the container by its pid...
	if err := m.Attach(ctx, mounter.Container{ID: "c1", Pid: 4242}); err != nil {
		log.Fatal(err)
	}
	// ...or hand read-only clones to a createContainer hook, which calls
	// linux.AttachHandovers(rootfs, hs) in the container's mount namespace.
	hs, err := m.Handover(mounter.Container{ID: "c1"})
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range hs {
		_ = h.Target // send h.File with SCM_RIGHTS, then close it
		h.File.Close()
	}
}
