// Package grants holds what a node has been granted: the services placed on
// it with their secret references, and the secrets' bytes in locked memory.
//
// Reconcile is a pure function from the current State and one dispatcher
// message (COMPLETE: reset; INCREMENTAL: patch) to the next State and the
// secret buffers to load and free. Cache applies it under a mutex and owns
// the buffers. Restrict hands a caller one service's grants and nothing
// else: least privilege as a type. Each service keeps the claim rules it
// arrived with (api/claimrule); Rules and Restricted.Rules hand them to the
// agent, which decides a claim with them before it mounts anything. A
// service that arrives with fields this agent does not know (a newer
// manager's, perhaps a rule) gets rules that refuse every claim
// (ErrUnknownServiceFields).
// Each service also keeps its live_update flag and each grant its signal
// (Restricted.LiveUpdate, mounter.Grant.Signal); Changed tells the agent
// that a message was applied, so that it can bring the running containers
// of live-update services up to date.
//
// It knows nothing of the stream, the local API or mounts beyond the
// mounter's Grant and SecretSource types.
package grants
