package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
)

func newUnlockCommand(c *connFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "unlock",
		Short: "Unlock a manager started with --autolock (the key is read from the terminal or standard input)",
		Long: `Unlock a manager started with --autolock.

A locked manager's private keys are sealed on disk by the key the unlock key
derives: it starts neither etcd nor its TCP listener until unlocked, so
'lockbox unlock' talks to its root-only admin socket, on its host (the default
-H). The key is read from the terminal without echo, or from standard input.

A manager that was down while the unlock key was rotated has its files sealed
under the previous key: give the previous key first, then the current one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := readUnlockKey(cmd.InOrStdin(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				_, err := cl.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: key})
				if codeOf(err) == codes.Unavailable && strings.HasPrefix(c.host, "tcp://") {
					// Its key files sealed, a locked manager listens on
					// TCP only once unlocked.
					return fmt.Errorf("cannot reach the manager at %s: a locked manager (autolock) is unlocked on its admin socket only: run 'lockbox unlock' on its host, as root (-H unix://%s)", c.host, strings.TrimPrefix(defaultHost, "unix://"))
				}
				return err
			})
		},
	}
}

// readUnlockKey reads one line: from the terminal without echo when stdin
// is one, else from the pipe. The key is never an argument, so it stays
// out of shell history and process listings.
func readUnlockKey(in io.Reader, prompt io.Writer) (string, error) {
	if f, ok := in.(*os.File); ok && isTerminal(f) {
		fmt.Fprint(prompt, "Enter unlock key: ")
		line, err := readNoEcho(f)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("read unlock key: %w", err)
		}
		return strings.TrimSpace(line), nil
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read unlock key: %w", err)
	}
	key := strings.TrimSpace(line)
	if key == "" {
		return "", errors.New("no unlock key on standard input")
	}
	return key, nil
}

func newUnlockKeyCommand(c *connFlags) *cobra.Command {
	var quiet, rotate bool
	cmd := &cobra.Command{
		Use:   "unlock-key [OPTIONS]",
		Short: "Show or rotate the cluster's unlock key (autolock)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{Rotate: rotate})
				if err != nil {
					return err
				}
				if !resp.Autolock || resp.UnlockKey == "" {
					return errors.New("autolock is off on this cluster: there is no unlock key (start managers with --autolock)")
				}
				w := cmd.OutOrStdout()
				if quiet {
					fmt.Fprintln(w, resp.UnlockKey)
					return nil
				}
				if rotate {
					fmt.Fprint(w, "Successfully rotated the unlock key. Running managers re-seal their key files\n"+
						"under it (for ten minutes the previous key, with a copy of etcd's data, still\n"+
						"leads to this one); a manager that is down needs the previous key once, then this one.\n\n")
				}
				fmt.Fprintf(w, "To unlock a manager after it restarts, run `lockbox unlock`\nand give it the following key:\n\n    %s\n\n"+
					"Keep this key in a password manager: without it a restarted manager\ncannot serve anything.\n", resp.UnlockKey)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display the key")
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the unlock key")
	return cmd
}
