// Package agentconn is the node agent's local API client that
// lockbox-runtime links: Prepare, Targets and Release over the agent's
// SOCK_SEQPACKET socket, with the peer's credentials checked, and
// SendRelease, a release the agent does not answer (the shim's at Delete).
//
// It speaks the same messages as agent/localapi (api/agent's Request and
// Response, one protobuf message per datagram, mount fds in SCM_RIGHTS) but
// encodes the three requests and decodes the response by hand, and it uses
// blocking socket calls instead of the net package. lockbox-runtime runs up
// to five times per container start; linking the protobuf runtime, the
// generated descriptors and the net package made every run about 0.2 ms
// slower, mostly package initialisation (docs/containerd.md, "Cost"). The tests check
// the encoding against api/agent and talk to the real localapi server.
//
// It must not import google.golang.org/protobuf, net, api/agent or
// agent/localapi.
package agentconn
