// Package store is typed access to the control plane's objects — secrets,
// services and nodes — kept in etcd.
//
// It holds the key layout, the encoding of objects, the transactions that
// keep the rules true under concurrent writers on any manager, and a
// snapshot-plus-watch view for the dispatcher. It does not validate user
// input (manager/admin does), except what a node says about itself, whose
// rules live here (nodedesc.go) because every join and the manager's own
// record reach the store through CreateNode. It does not know about gRPC
// status codes, and
// never sees key material: secret data is sealed by a Sealer before it is
// written and opened by it after it is read.
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
//	names/hostnames/<hostname>     <id>: the worker that joined with that (lower-cased) hostname
//	names/hostnames-indexed        "": nodes recorded before that index are in it
//	refs/<secret id>/<service id>  "": service <service id> references secret <secret id>
//	keys/                          reserved for manager/keys (the wrapped data keys)
//	cluster/                       reserved for manager-cluster (CA, join tokens, members)
//
// Meta.version of an object is the etcd mod revision of its object key.
// The value stored never carries it; it is filled in on read.
//
// # Rules kept in one transaction
//
//   - A name index key is created with "create revision == 0", so two
//     concurrent creates of one name cannot both succeed. Worker hostnames
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
//     compares the keyring's mod revision with the one it sealed under, so
//     data sealed under a key that a concurrent rotation drops is never
//     stored: the write reloads the keys and seals again.
//
// # Watching
//
// Snapshot reads every object at one revision; Watch streams typed events
// after a revision. A dispatcher takes a Snapshot, sends it, and watches from
// Snapshot.Revision. Watchers of raw keys can watch Prefix()+"services/",
// Prefix()+"nodes/" and so on.
package store
