package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/topkd/topkd/client"
)

func (a *app) leaderboardCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "leaderboard",
		Aliases: []string{"lb"},
		Short:   "Create, list, describe and drop leaderboards",
	}
	cmd.AddCommand(a.lbCreateCmd(), a.lbListCmd(), a.lbDescribeCmd(), a.lbDropCmd())
	return cmd
}

func (a *app) lbCreateCmd() *cobra.Command {
	var l client.Leaderboard
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Define a leaderboard",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l.Name = args[0]
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				got, err := c.CreateLeaderboard(ctx, l)
				if err != nil {
					return err
				}
				if asJSON {
					return a.printJSON(got)
				}
				fmt.Fprintf(a.stdout, "created leaderboard %s\n", got.Name)
				return a.printLeaderboard(got)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&l.Mode, "mode", "", "exact (default), cms or spacesaving")
	f.StringSliceVar(&l.Windows, "windows", nil, `sliding windows, e.g. 1m,1h,1d,7d ("all" always exists; default: the server's)`)
	f.Uint32Var(&l.KMax, "k-max", 0, "largest K a query may ask for (0: the server's default)")
	f.StringVar(&l.Clock, "clock", "", "wall (default) or event")
	f.StringVar(&l.AllowedLateness, "allowed-lateness", "", "event clock: how late an event may arrive, e.g. 5m")
	f.Uint64Var(&l.MaxItems, "max-items", 0, "bound on distinct items (0: none)")
	f.Float64Var(&l.Epsilon, "epsilon", 0, "cms: relative error bound")
	f.Float64Var(&l.Delta, "delta", 0, "cms: failure probability")
	f.Uint64Var(&l.Capacity, "capacity", 0, "spacesaving: counters per summary")
	f.BoolVar(&asJSON, "json", false, "print the created leaderboard as JSON")
	return cmd
}

func (a *app) printLeaderboard(l client.Leaderboard) error {
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "name\t%s\n", l.Name)
	fmt.Fprintf(w, "mode\t%s\n", l.Mode)
	fmt.Fprintf(w, "windows\tall,%s\n", strings.Join(l.Windows, ","))
	fmt.Fprintf(w, "k_max\t%d\n", l.KMax)
	fmt.Fprintf(w, "clock\t%s\n", l.Clock)
	if l.AllowedLateness != "" {
		fmt.Fprintf(w, "allowed_lateness\t%s\n", l.AllowedLateness)
	}
	if l.MaxItems > 0 {
		fmt.Fprintf(w, "max_items\t%d\n", l.MaxItems)
	}
	if l.Epsilon > 0 || l.Delta > 0 {
		fmt.Fprintf(w, "epsilon\t%g\n", l.Epsilon)
		fmt.Fprintf(w, "delta\t%g\n", l.Delta)
	}
	if l.Capacity > 0 {
		fmt.Fprintf(w, "capacity\t%d\n", l.Capacity)
	}
	if l.FilterCells > 0 {
		fmt.Fprintf(w, "filter_cells\t%d\n", l.FilterCells)
	}
	fmt.Fprintf(w, "incarnation\t%d (version %d)\n", l.Incarnation, l.Version)
	return w.Flush()
}

func (a *app) lbListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List leaderboards",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				ls, err := c.ListLeaderboards(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return a.printJSON(ls)
				}
				w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tMODE\tWINDOWS\tK_MAX\tCLOCK\tMAX_ITEMS\tINCARNATION")
				for _, l := range ls {
					fmt.Fprintf(w, "%s\t%s\tall,%s\t%d\t%s\t%d\t%d\n", l.Name, l.Mode, strings.Join(l.Windows, ","),
						l.KMax, l.Clock, l.MaxItems, l.Incarnation)
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw answer as JSON")
	return cmd
}

func (a *app) lbDescribeCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a leaderboard's definition and statistics",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				info, err := c.DescribeLeaderboard(ctx, args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return a.printJSON(info)
				}
				if err := a.printLeaderboard(info.Leaderboard); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "accepted events: %d, rejected: %d\n\n", info.Accepted, info.Rejected)
				w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
				fmt.Fprintln(w, "WINDOW\tDISTINCT ITEMS\tLATE DROPPED\t")
				for _, ws := range info.Windows {
					fmt.Fprintf(w, "%s\t%d\t%d\t\n", ws.Window, ws.DistinctItems, ws.LateDropped)
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw answer as JSON")
	return cmd
}

func (a *app) lbDropCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "drop NAME",
		Short: "Remove a leaderboard and its counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if err := c.DropLeaderboard(ctx, args[0]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(a.stdout, "dropped leaderboard %s\n", args[0])
				return err
			})
		},
	}
}
