// Command bootstrap is the Lambda function of esbnet's end-to-end tests and
// demo, written as ESB's functions are: github.com/aws/aws-lambda-go for the
// runtime API and aws-sdk-go-v2 for S3 and DynamoDB, the services named by
// AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_DYNAMODB (e.g. http://s3-storage:9000
// and http://database:8000, which a worker resolves to the bridge gateway),
// S3 in path style, and a log line pushed to VictoriaLogs' JSON-lines ingest
// at VICTORIALOGS_URL (default http://victorialogs:9428).
//
// In its image it is /var/runtime/bootstrap, behind the Lambda Runtime
// Interface Emulator (the entry point), which serves
// POST /2015-03-31/functions/function/invocations on 8080.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	fn, err := newFunction(context.Background(), os.Getenv)
	if err != nil {
		// The runtime API has an init error endpoint, but a plain exit is
		// what the RIE reports as Runtime.ExitError, which is enough here.
		fmt.Fprintf(os.Stderr, "bootstrap: %v\n", err)
		os.Exit(1)
	}
	lambda.Start(fn.Handle)
}
