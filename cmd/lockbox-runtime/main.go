// Command lockbox-runtime stands in for runc on the container-start path: it
// has the agent mount the secrets of a container that claims a service, and
// passes every other call straight to the real runc.
package main

func main() {}
