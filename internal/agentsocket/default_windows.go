package agentsocket

// Default is the agent's named pipe unless told otherwise: Windows'
// counterpart of the Linux agent socket.
const Default = `\\.\pipe\lockbox-agent`
