// Package admin implements the operator's Admin gRPC service
// (api/admin): it validates every input, turns store and key errors into
// gRPC status codes with messages a user can act on, and never returns
// secret data.
//
// It holds validation and the mapping of requests onto manager/store. The
// things the cluster layer owns — join tokens, unlocking, certificate
// revocation, data-key rotation — reach it through the small interfaces
// declared here (TokenIssuer, Unlocker, NodeRevoker, DataKeyRotator),
// implemented and wired by the manager daemon (KeyManager adapts a
// keys.Manager to Unlocker and DataKeyRotator). It does not listen on
// sockets, check peer credentials or authorise callers: the server that
// registers it does.
package admin
