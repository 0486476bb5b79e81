package main

import (
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	api "github.com/heraldhq/herald/client/serverapi"
)

// apiUserCommands are the server API's user ops: they act on a user's
// sockets on every node.
func apiUserCommands() []*cli.Command {
	return []*cli.Command{
		leaf(&cli.Command{Name: "disconnect", ArgsUsage: "USER [--code N] [--reason R] [--block-for D | --block-until T]",
			Usage: "close USER's sockets on every node; with a block, refuse its auth until then",
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "code", Usage: "close code, 4100..4499 (default 4010, disconnected by the server)"},
				&cli.StringFlag{Name: "reason", Usage: "close reason, at most 123 bytes"},
				&cli.DurationFlag{Name: "block-for", Usage: "refuse the user's auth for this long (whole seconds, at most 24h)"},
				&cli.TimestampFlag{Name: "block-until", Layout: time.RFC3339, Usage: "refuse the user's auth until this RFC 3339 time"},
			},
			Action: apiAction(cmdAPIDisconnect)}),
		leaf(&cli.Command{Name: "unsubscribe", ArgsUsage: "USER ROOM", Usage: "end USER's subscriptions to ROOM on every node",
			Action: apiAction(cmdAPIUnsubscribe)}),
		leaf(&cli.Command{Name: "leave", ArgsUsage: "USER ROOM", Usage: "remove USER from ROOM's members",
			Action: apiAction(cmdAPILeave)}),
		leaf(&cli.Command{Name: "refresh", ArgsUsage: "USER (--expire-in D | --expire-at T)",
			Usage: "set the expiry of USER's sockets on every node: earlier cuts them, later extends them",
			Flags: []cli.Flag{
				&cli.DurationFlag{Name: "expire-in", Usage: "expire this long from now (whole seconds, at most 24h; 0s: now)"},
				&cli.TimestampFlag{Name: "expire-at", Layout: time.RFC3339, Usage: "expire at this RFC 3339 time"},
			},
			Action: apiAction(cmdAPIRefresh)}),
	}
}

func cmdAPIDisconnect(s *apiSession) error {
	if err := s.wantArgs(1, "USER"); err != nil {
		return err
	}
	req := api.DisconnectRequest{User: s.args[0], Code: s.c.Int("code"), Reason: s.c.String("reason"),
		BlockUntil: s.c.Timestamp("block-until")}
	if d := s.c.Duration("block-for"); d != 0 {
		if d < time.Second || d%time.Second != 0 {
			return usagef("--block-for %v: whole seconds, at least 1s", d)
		}
		req.BlockFor = int64(d / time.Second)
	}
	res, err := s.client.Disconnect(s.ctx, req)
	if err != nil {
		return err
	}
	return s.printUserResult(res, "SOCKETS CLOSED", func(w io.Writer) {
		if res.BlockUntil != nil {
			fmt.Fprintf(w, "\n%s is refused until %s\n", req.User, res.BlockUntil.Format(time.RFC3339))
		}
	})
}

func cmdAPIUnsubscribe(s *apiSession) error {
	if err := s.wantArgs(2, "USER ROOM"); err != nil {
		return err
	}
	res, err := s.client.Unsubscribe(s.ctx, api.UnsubscribeRequest{User: s.args[0], Room: s.args[1]})
	if err != nil {
		return err
	}
	return s.printUserResult(res, "SUBSCRIPTIONS ENDED", nil)
}

func cmdAPILeave(s *apiSession) error {
	if err := s.wantArgs(2, "USER ROOM"); err != nil {
		return err
	}
	res, err := s.client.Leave(s.ctx, api.LeaveRequest{User: s.args[0], Room: s.args[1]})
	if err != nil {
		return err
	}
	return s.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "%s left %s at seq %d, epoch %s\n", s.args[0], s.args[1], res.Seq, res.Epoch)
	})
}

func cmdAPIRefresh(s *apiSession) error {
	if err := s.wantArgs(1, "USER"); err != nil {
		return err
	}
	req := api.RefreshRequest{User: s.args[0], ExpireAt: s.c.Timestamp("expire-at")}
	if s.c.IsSet("expire-in") {
		d := s.c.Duration("expire-in")
		if d < 0 || d%time.Second != 0 {
			return usagef("--expire-in %v: whole seconds, not negative", d)
		}
		in := int64(d / time.Second)
		req.ExpireIn = &in
	}
	if (req.ExpireAt == nil) == (req.ExpireIn == nil) {
		return usagef("refresh needs one of --expire-in and --expire-at")
	}
	res, err := s.client.Refresh(s.ctx, req)
	if err != nil {
		return err
	}
	return s.printUserResult(res, "SOCKETS REFRESHED", func(w io.Writer) {
		if res.ExpireAt != nil {
			fmt.Fprintf(w, "\n%s's sockets expire at %s\n", req.User, res.ExpireAt.Format(time.RFC3339))
		}
	})
}

// printUserResult prints a user op's nodes and fails when any node did
// not act: the op may be repeated for them.
func (s *apiSession) printUserResult(res *api.UserResult, column string, after func(io.Writer)) error {
	err := s.print(res, func(w io.Writer) {
		fmt.Fprintf(w, "NODE\t%s\tERROR\n", column)
		for _, n := range res.Nodes {
			if n.Error != nil {
				fmt.Fprintf(w, "%s\t-\t%s: %s\n", n.Node, n.Error.Code, n.Error.Message)
			} else {
				fmt.Fprintf(w, "%s\t%d\t\n", n.Node, n.Sockets)
			}
		}
		if after != nil {
			after(w)
		}
	})
	if failed := res.Failed(); err == nil && len(failed) > 0 {
		err = fmt.Errorf("%d of %d nodes failed; run it again to reach them", len(failed), len(res.Nodes))
	}
	return err
}
