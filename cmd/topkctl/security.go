package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/topkd/topkd/client"
	"github.com/topkd/topkd/server/security"
)

// securityOptions are the client options of --ca, --cert, --key,
// --server-name and the token (--token-file, else TOPKD_TOKEN).
func (a *app) securityOptions() ([]client.Option, error) {
	var opts []client.Option
	if a.caFile != "" || a.certFile != "" || a.keyFile != "" || a.serverName != "" {
		cfg, err := client.LoadTLS(a.caFile, a.certFile, a.keyFile, a.serverName)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	token := os.Getenv("TOPKD_TOKEN")
	if a.tokenFile != "" {
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return opts, nil
}

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create bearer tokens for a node's --token-file"}
	var role, name string
	create := &cobra.Command{
		Use:   "create",
		Short: "Print a new random token and the line that grants it a role",
		Long: `create prints two lines. The first is the token: give it to the caller (topkctl reads it from
--token-file or TOPKD_TOKEN). The second holds only the token's SHA-256 and its role: append it to
every node's --token-file, which they reload within seconds. Delete the line to revoke the token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := security.ParseRole(role)
			if err != nil {
				return err
			}
			tok, line, err := security.NewToken(r, name)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "token: %s\nline:  %s\n", tok, line)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "read", "read (queries, status), write (ingest, and read) or admin (everything)")
	create.Flags().StringVar(&name, "name", "", "who the token is for, kept in the token file's line")
	cmd.AddCommand(create)
	return cmd
}

func (a *app) gossipKeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gossip-key",
		Short: "Generate gossip keys and rotate them across a live cluster",
		Long: `A rotation takes three steps, each applied on every member and failing if any member misses it:
  topkctl gossip-key install NEW   every member accepts NEW
  topkctl gossip-key use NEW       every member sends with NEW (refused until all have it)
  topkctl gossip-key remove OLD    OLD is no longer accepted
Each member saves its keyring in its data dir, where it overrides --gossip-key-file from then on.
Keys are read from stdin when KEY is "-", so they stay out of shell history.`,
	}
	gen := &cobra.Command{Use: "generate", Short: "Print a new random 32-byte key in base64", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			k, err := security.NewGossipKey()
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, k)
			return nil
		}}
	cmd.AddCommand(gen)
	for _, op := range []string{"install", "use", "remove", "list"} {
		use, args := op+" KEY", cobra.ExactArgs(1)
		if op == "list" {
			use, args = op, cobra.NoArgs
		}
		cmd.AddCommand(&cobra.Command{Use: use, Short: op + " on every member", Args: args,
			RunE: func(cmd *cobra.Command, argv []string) error {
				key := ""
				if len(argv) == 1 {
					key = argv[0]
					if key == "-" {
						line, err := bufio.NewReader(a.stdin).ReadString('\n')
						if err != nil && line == "" {
							return fmt.Errorf("read the key from stdin: %w", err)
						}
						key = strings.TrimSpace(line)
					}
				}
				return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
					res, err := c.RotateGossipKey(ctx, op, key)
					if res != nil {
						for _, m := range res.Members {
							state := strings.Join(m.KeyIds, " ")
							if m.Error != "" {
								state = "FAILED: " + m.Error
							}
							fmt.Fprintf(a.stdout, "%-12s %s\n", m.Node, state)
						}
					}
					return err
				})
			}})
	}
	return cmd
}
