// Package runtime holds the runtime-spec view of a claiming bundle for
// code that already links the runtime-spec types and the agent's protobuf
// API (plugin/hook): ReadClaim decodes the whole config.json into a
// specs.Spec and Claim.Container builds an api/agent Container.
//
// lockbox-runtime itself does not use this package: the runc wrapper and
// its hook are in plugin/runtime/hotpath, which links neither protobuf nor
// the runtime-spec types, and talks to the agent with
// plugin/runtime/agentconn. Which bundles claim what is decided there, in
// one place; this package only adds the full decode.
package runtime
