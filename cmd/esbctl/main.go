// Command esbctl is the operator's tool for esbnet; see "esbctl help".
// The logic lives in internal/cli.
package main

import (
	"os"

	"github.com/edge-serverless-box/esbnet/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
