package main

import "github.com/spf13/cobra"

func addAgentCommand(root *cobra.Command) {}
