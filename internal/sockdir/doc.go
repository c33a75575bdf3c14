// Package sockdir holds the one rule for the directory of a root-only unix
// socket (the manager's admin socket, the agent's local API): a missing
// directory is made 0700; an existing one is used as it is, never chmod'ed
// (a socket in /run or /tmp must not close that directory to everyone
// else), and only if this process's user owns it and nobody else may write
// it, since whoever can write the directory can replace the socket.
//
// It knows nothing of what is served on the socket.
package sockdir
