// Package cli implements esbctl's subcommands.
package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/internal/buildinfo"
)

const usage = `esbctl: the esbnet operator's tool

Usage:
  esbctl conflist [-o FILE] [-force] [-cni-version V] [-network N -subnet CIDR]
                                       print the default esb network conflist (or another
                                       stack's), or write it to FILE
  esbctl nat apply|show|delete|watch   manage the nftables DNAT of 10.88.0.1 to the local proxy ("esbctl nat -h")
  esbctl acquire|release|ls|pause|resume|metrics|invoke|status
                                       talk to esb-agent ("esbctl acquire -h")
  esbctl doctor [-o json] [flags]      check this node; each finding with the command that fixes it ("esbctl doctor -h")
  esbctl version                       print the version
  esbctl help                          print this help
`

// Main runs esbctl with args (without the program name) and returns the
// process exit code: 0 on success, 1 on failure, 2 on bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "conflist":
		err = conflist(args[1:], stdout, stderr)
	case "nat":
		err = natCmd(args[1:], stdout, stderr)
	case "acquire", "release", "ls", "pause", "resume", "metrics", "invoke", "status":
		err = agentMain(args[0], args[1:], stdout, stderr)
	case "doctor":
		err = doctorCmd(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		_, err = fmt.Fprintln(stdout, "esbctl", buildinfo.Version)
	case "help", "-h", "--help":
		_, err = fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "esbctl: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "esbctl:", err)
		return 2
	}
	var se silentError
	if errors.As(err, &se) { // the command's own output already said it
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "esbctl:", err)
		return 1
	}
	return 0
}

type usageError struct{ error }

// silentError exits 1 without a message: the command printed it.
type silentError struct{ error }

func conflist(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("esbctl conflist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the conflist to this file instead of standard output (for example "+conf.ConflistPath+")")
	force := fs.Bool("force", false, "overwrite FILE even when it differs from the default")
	network := fs.String("network", conf.NetworkName, "the stack's network name: its bridge is <network>-cni0 (esb-cni0 for esb)")
	subnet := fs.String("subnet", conf.DefaultSubnet, "the stack's IPv4 subnet (each stack on a host needs its own); the gateway is its first address")
	version := fs.String("cni-version", conf.CNIVersion, "cniVersion of the list: 1.1.0, 1.0.0 or 0.4.0 (Podman 4.3 on Debian 12 reads results up to 1.0.0)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("conflist takes no arguments, got %q", fs.Args())}
	}
	switch *version {
	case "1.1.0", "1.0.0", "0.4.0":
	default:
		return usageError{fmt.Errorf("-cni-version must be 1.1.0, 1.0.0 or 0.4.0, not %q", *version)}
	}
	stack, err := conf.StackOf(*network)
	if err != nil {
		return usageError{err}
	}
	prefix, err := netip.ParsePrefix(*subnet)
	if err != nil || !prefix.Addr().Is4() || prefix.Bits() > 30 {
		return usageError{fmt.Errorf("-subnet %q must be an IPv4 CIDR of /30 or larger, such as 10.89.0.0/16", *subnet)}
	}
	list := conf.StackConflist(stack, prefix)
	list.CNIVersion = *version
	b, err := list.Marshal()
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(b)
		return err
	}
	return writeConflist(*out, b, *force, stdout)
}

// writeConflist writes b to path atomically. A file that already holds b is
// left alone; one that differs is kept unless force is set.
func writeConflist(path string, b []byte, force bool, stdout io.Writer) error {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, b):
		_, err = fmt.Fprintf(stdout, "%s is up to date\n", path)
		return err
	case err == nil && !force:
		return fmt.Errorf("%s differs from the default conflist; keeping it (use -force to overwrite)", path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".esbctl-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		return errors.Join(err, os.Remove(tmp.Name()))
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return errors.Join(err, os.Remove(tmp.Name()))
	}
	_, err = fmt.Fprintf(stdout, "wrote %s\n", path)
	return err
}
