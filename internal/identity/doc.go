// Package identity generates the random IDs of the cluster: node, cluster,
// admin and object (secret, service) IDs all come from NewID, so they share
// one format everywhere they are shown or parsed.
//
// It holds no state and imports only the standard library: the agent, the
// manager and its store may all link it.
package identity
