package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/conf/confdir"
	"github.com/edge-serverless-box/esbnet/conf/natfile"
	"github.com/edge-serverless-box/esbnet/nat"
)

const natUsage = `Usage:
  esbctl nat apply -f FILE              make table ip esb match the rule file (YAML or JSON)
  esbctl nat show [-o text|json]        the installed forwards with their counters
  esbctl nat delete [-bridge NAME]      remove table ip esb (and route_localnet if we set it)
  esbctl nat watch -f FILE [-interval D] apply, then repair drift until interrupted

Each takes -network N (default esb): the stack whose table ip N it works on,
never another's; its bridge defaults to N-cni0 (esb-cni0 for esb). apply and
watch also keep N's workers apart from the other stacks configured in
-cni-conf-dir (default /etc/cni/net.d), as esb-agent does.

A rule file:
  egress: proxy-only          # or open (adds masquerade for traffic leaving the subnet)
  forwards:
    - {proto: tcp, port: 9000, to: "127.0.0.1:9000"}

Counters count connections: the DNAT chain sees the first packet of each.
`

func natCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{fmt.Errorf("nat needs a subcommand\n\n%s", natUsage)}
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		_, err := fmt.Fprint(stdout, natUsage)
		return err
	}
	fs := flag.NewFlagSet("esbctl nat "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, natUsage) }
	file := fs.String("f", "", "rule file (YAML or JSON)")
	out := fs.String("o", "text", "output format of show: text or json")
	network := fs.String("network", conf.NetworkName, "the stack (network name) whose table ip <network> to work on")
	confDir := fs.String("cni-conf-dir", filepath.Dir(conf.ConflistPath), "where the other stacks' conflists are (apply, watch)")
	bridge := fs.String("bridge", "", "bridge whose route_localnet delete resets (default: the network's, esb-cni0 for esb)")
	interval := fs.Duration("interval", 5*time.Second, "periodic read-back of watch")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	stack, err := conf.StackOf(*network)
	if err != nil {
		return usageError{err}
	}
	if *bridge == "" {
		*bridge = stack.Bridge
	}
	var m nat.DNAT = nat.NewManagerFor(nil, stack.Table)
	ctx := context.Background()
	load := func() (*conf.NATRules, error) {
		if *file == "" {
			return nil, usageError{errors.New("-f FILE is required")}
		}
		r, err := natfile.Load(*file)
		if err != nil {
			return nil, err
		}
		nets, err := confdir.Networks(*confDir)
		if err != nil {
			return nil, err
		}
		if r.Others, err = confdir.Others(stack.Network, nets); err != nil {
			return nil, err
		}
		return r, nil
	}
	switch args[0] {
	case "apply":
		r, err := load()
		if err != nil {
			return err
		}
		change, err := m.Apply(ctx, r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "table ip %s: %s (%d forwards, egress %s)\n", stack.Table, change, len(r.Forwards), r.Egress)
		return err
	case "show":
		counters, err := m.Counters(ctx)
		if err != nil {
			return err
		}
		return showCounters(stdout, counters, *out)
	case "delete":
		if err := m.Delete(ctx, *bridge); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "table ip %s deleted\n", stack.Table)
		return err
	case "watch":
		r, err := load()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		log := slog.New(slog.NewTextHandler(stderr, nil))
		log.Info("watching table ip "+stack.Table, "forwards", len(r.Forwards), "egress", r.Egress, "interval", *interval)
		err = m.Watch(ctx, r, *interval, func(e nat.Event) {
			if e.Err != nil {
				log.Error("repair failed", "trigger", e.Trigger, "err", e.Err)
				return
			}
			log.Info("table ip "+stack.Table+" repaired", "trigger", e.Trigger, "change", e.Change.String(), "took", e.Took)
		})
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	default:
		return usageError{fmt.Errorf("unknown nat subcommand %q\n\n%s", args[0], natUsage)}
	}
}

type counterJSON struct {
	Proto       string `json:"proto"`
	Port        uint16 `json:"port"`
	To          string `json:"to"`
	Connections uint64 `json:"connections"`
	Bytes       uint64 `json:"bytes"`
}

func showCounters(w io.Writer, cs []nat.ForwardCounter, format string) error {
	switch format {
	case "json":
		out := make([]counterJSON, 0, len(cs))
		for _, c := range cs {
			out = append(out, counterJSON{c.Forward.Proto, c.Forward.Port, c.Forward.To.String(), c.Packets, c.Bytes})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "text":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PROTO\tPORT\tTO\tCONNECTIONS\tBYTES")
		for _, c := range cs {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\n", c.Forward.Proto, c.Forward.Port, c.Forward.To, c.Packets, c.Bytes)
		}
		return tw.Flush()
	default:
		return usageError{fmt.Errorf("-o must be text or json, not %q", format)}
	}
}
