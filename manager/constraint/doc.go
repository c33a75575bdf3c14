// Package constraint parses placement constraints and matches them
// against nodes.
//
// A constraint is "KEY==VALUE" or "KEY!=VALUE" (api/ruleexpr's syntax,
// shared with claim rules) with KEY one of node.id,
// node.hostname, node.role (worker or manager), node.platform.os,
// node.platform.arch and node.labels.<label>. As in swarm, values compare
// without regard to case, and a service's constraints must all hold. A
// node without the label is unequal to any value.
//
// Every key reads only what a node cannot choose for itself after it
// joined: its ID (in its certificate), its role (from its join token), the
// labels an operator set, and the hostname and platform in
// Node.Description, which the store fixes at join (unique hostname among
// workers, validated). What a node's session reports later sits in
// Node.Reported, which no key reads.
//
// The package is pure: no I/O, no store, no gRPC. The admin API uses
// Parse to validate; the dispatcher uses Match to place.
package constraint
