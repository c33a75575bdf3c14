// Package store is typed access to everything a manager keeps in etcd: the
// control plane's objects (secrets, services, nodes), the cluster table
// (cluster ID, root CA, join tokens, revocations, issued certificate
// serials, the CRL, the manager registry) and the wrapped keyring.
//
// It is the only package that talks to etcd (manager/etcd runs the member
// and hands the store its client). It holds the key layout, the encoding
// of objects, the transactions that keep the rules true under concurrent
// writers on any manager, the history reads and snapshot-plus-watch view
// of the dispatcher, and the one watch-and-reload loop (follow.go) that
// every follower of cluster state uses. It does not validate user input
// (manager/admin does), except what a node says about itself, whose rules
// live here (nodedesc.go) because every join and the manager's own record
// reach the store through CreateNode. It does not know about gRPC status codes or x509
// (manager/ca does), and never sees key material: secret data is sealed
// by a Sealer before it is written and opened by it after it is read; the
// CA key and join tokens arrive sealed by manager/ca, bound to their
// records by the associated data the store names (CAKeyAD, JoinTokensAD,
// like recordAD for secret data: the key below the prefix); the keyring
// arrives wrapped by manager/keys.
//
// # Key layout
//
// Every key lives under a prefix (default "/lockbox/"):
//
//	secrets/<id>                   types.Secret, protobuf; no data
//	secretdata/<id>                sealed data of secret <id> (Sealer output)
//	services/<id>                  types.Service, protobuf
//	nodes/<id>                     types.Node, protobuf
//	names/secrets/<name>           <id>: the unique-name index of secrets
//	names/services/<name>          <id>: the unique-name index of services
//	names/secrets-nocase/<lower>   <id>: secret names without regard to case (swarm's rule: unique
//	names/services-nocase/<lower>  <id>: so, and found by name without case); names.go
//	names/nocase-indexed           "": objects recorded before the -nocase indexes are in them
//	names/hostnames/<hostname>     <id>: the worker that joined with that (lower-cased) hostname
//	names/hostnames-indexed        "": nodes recorded before that index are in it
//	refs/<secret id>/<service id>  "": service <service id> references secret <secret id>
//	keys/keyring                   the keyring wrapped by the KEK (manager/keys' format)
//	cluster/id                     cluster ID (plain)
//	cluster/ca/root                JSON CARoot {cert PEM, CA key sealed by the data key for CAKeyAD}
//	cluster/ca/tokens              JSON SealedJoinTokens {generation, join token secrets sealed
//	                               by manager/ca for JoinTokensAD(generation)}; raw sealed bytes
//	                               (unbound) on clusters made before sealed values were bound
//	cluster/ca/crl                 DER CRL signed by the root: every unexpired peer (manager) serial below of a revoked node
//	cluster/revoked/<node>         RFC 3339 time the node was revoked
//	cluster/certs/<node>/<serial>  JSON {issued, not_after, peer}: a certificate (hex serial) issued to <node>
//	                               (older records: the RFC 3339 time only; read as peer, no expiry)
//	cluster/managers/<node>        advertised address of a running manager, under its lease
//	containers/<service id>/<node id>/<container id, path-escaped>
//	                               JSON ContainerStatus: what the node last reported about a
//	                               container holding the service's secrets (containers.go; service
//	                               ps). Written only from the node's own heartbeat, under its
//	                               certificate identity and the manager's clock; removed on a wipe
//	                               report, when the node's inventory no longer lists the container
//	                               (ReconcileNodeContainers), with the service, and
//	                               (RemoveNodeContainers) with the node
//	nodecontainers/<node id>/<container id, path-escaped>
//	                               <service id>: the node's index of those rows, to bound them
//	                               (MaxContainersPerNode) and remove them with the node
//	audit/<unix nanos, 20 digits>-<id>
//	                               types.AuditEntry, protobuf: the append-only audit log (audit.go),
//	                               entries that are not node-reported (admins', managers'); created
//	                               once (compare create revision 0, of this key and of the same
//	                               suffix under audit-node/), never rewritten; CompactAudit removes
//	                               the oldest beyond AuditRetention.Others (DefaultAuditRetention).
//	                               Admin writes put their entry in the change's own transaction
//	                               (WithAuditActor). Names and IDs only, never data. Node reports
//	                               written here before audit-node/ existed stay, listed and counted
//	                               as this class.
//	audit-node/<unix nanos, 20 digits>-<id>
//	                               the same, for node-reported entries (AppendNodeAudit: mount
//	                               reports, wipe.reconciled), with a budget of their own
//	                               (AuditRetention.NodeReported, DefaultNodeAuditRetention), so no
//	                               number of node reports removes another entry. ListAudit merges
//	                               both prefixes by suffix; a page token is a suffix.
//
// The cluster keys are compared and swapped where two managers may write
// at once (tokens, root, CRL, keyring: SwapX with the version read), and a
// certificate serial is recorded only while its node is not revoked (one
// transaction), so the CRL built after a revocation lists every
// certificate the node can hold.
//
// Meta.version of an object is the etcd mod revision of its object key.
// The value stored never carries it; it is filled in on read.
//
// # Rules kept in one transaction
//
//   - A name index key (exact and lower-cased) is created with "create
//     revision == 0", so two concurrent creates of one name, or of names
//     that differ only in case, cannot both succeed. Worker hostnames
//     are indexed the same way: a node's hostname and platform are fixed
//     when it joins (placement reads them) and unique among workers.
//   - Removing a secret compares the prefix refs/<secret id>/ empty in the
//     same transaction as the delete, and creating or updating a service
//     compares every secret it references present while writing its
//     refs/ keys. So no interleaving leaves a service referencing a missing
//     secret.
//   - Updates compare the object's mod revision with the version the caller
//     read (optimistic concurrency).
//   - With a KeyFence sealer (manager/keys), every write of sealed data also
//     compares keys/keyring's mod revision with the one it sealed under, so
//     data sealed under a key that a concurrent rotation drops is never
//     stored: the write reloads the keys and seals again.
//
// # Watching
//
// Snapshot reads every object at one revision; Watch streams typed events
// after a revision. A dispatcher takes a Snapshot, sends it, and watches from
// Snapshot.Revision; ViewInputsAt reads the services and a node at a past
// revision, for a node resuming its stream. Followers of the cluster table
// (FollowRevocations, FollowCRL, FollowManagers, Keyring().FollowKeyring)
// get a full reload whenever their watch breaks.
package store
