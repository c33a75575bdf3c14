package main

import "github.com/spf13/cobra"

func addManagerCommand(root *cobra.Command) {}
