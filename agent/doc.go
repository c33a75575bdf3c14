// Package agent is the node agent's core: it serves the local API
// (agent/localapi) from the grant cache (agent/grants) by building each
// container's secrets mount with the platform mounter, attaching it or
// handing its fds over, and wiping it when the container's process exits
// (Linux: a pidfd per container, one epoll loop, exitwatch_linux.go) or the
// container is released, whichever comes first. Before it builds anything
// it decides the claim with the service's claim rules (api/claimrule) on
// the facts the adapter reported (targets.go: admit), and logs and counts
// a refusal.
//
// It records which containers it has mounted (IDs, liveness hints, and
// which secret IDs sit at which targets; never secret data) in the state
// directory so that a restarted agent can tell finished containers from
// running ones, and knows what each running one holds.
//
// Live updates (liveupdate.go): after every message the grant cache
// applies, it brings the running containers of live-update services to
// their service's current grants through the mounter (mounter.Updater),
// under each container's lock, reports UPDATED or UPDATE_FAILED (names and
// IDs only), retries failures with backoff, and sends a changed grant's
// signal to the container's init by pidfd.
//
// It names no platform: it is given a mounter.Mounter (agent/daemon picks
// linux or windows) and finds the optional capabilities it uses by type
// assertion (mounter.Handoverer, mounter.Recoverer,
// mounter.StoreRecoverer, mounter.Updater). It names no wire either: it returns domain
// errors (agent/errdefs), which agent/localapi maps onto its wire codes.
//
// It knows nothing of etcd or of the manager's side (it imports nothing
// under manager/); the stream to the managers lives in agent/session.
package agent
