package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Event is the invoke payload. Key names the S3 object and the DynamoDB
// item (letters, digits, '.', '_', '-'; at most 200); Body is what is
// written to both.
type Event struct {
	Key  string `json:"key"`
	Body string `json:"body"`
}

// Result is the answer: what the function read back from each service.
type Result struct {
	RequestID string `json:"request_id"`
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	// Object is the object's content as GetObject returned it.
	Object string `json:"object"`
	Table  string `json:"table"`
	// Item is the item's "body" attribute as GetItem returned it.
	Item string `json:"item"`
	// Logged is the VictoriaLogs stream field value of the pushed line:
	// query it with `function:<Logged> AND request_id:<RequestID>`.
	Logged string `json:"logged"`
}

var keyRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

type function struct {
	s3      *s3.Client
	ddb     *dynamodb.Client
	http    *http.Client
	logsURL string
	bucket  string
	table   string
	name    string

	// ready is set once the bucket and the table exist: a Lambda
	// environment runs one invoke at a time, later ones skip the set-up.
	ready bool
}

// newFunction builds the clients from the environment, as the Lambda
// runtime hands it over. Without credentials in the environment it uses
// static test ones, so that the SDK never goes looking for an instance
// metadata service.
func newFunction(ctx context.Context, getenv func(string) string) (*function, error) {
	opts := []func(*config.LoadOptions) error{}
	if getenv("AWS_REGION") == "" && getenv("AWS_DEFAULT_REGION") == "" {
		opts = append(opts, config.WithRegion("us-east-1"))
	}
	if getenv("AWS_ACCESS_KEY_ID") == "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("esb", "esb-secret", "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load aws config: %w", err)
	}
	f := &function{
		s3:      s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }),
		ddb:     dynamodb.NewFromConfig(cfg),
		http:    &http.Client{Timeout: 10 * time.Second},
		logsURL: strings.TrimSuffix(orDefault(getenv("VICTORIALOGS_URL"), "http://victorialogs:9428"), "/"),
		bucket:  orDefault(getenv("FUNCTION_BUCKET"), "esb-function"),
		table:   orDefault(getenv("FUNCTION_TABLE"), "esb-function"),
		name:    orDefault(getenv("AWS_LAMBDA_FUNCTION_NAME"), "esb-function"),
	}
	return f, nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// Handle writes ev.Body to the object and the item named ev.Key, reads both
// back, pushes one log line and answers with what it read.
func (f *function) Handle(ctx context.Context, ev Event) (*Result, error) {
	if !keyRE.MatchString(ev.Key) {
		return nil, fmt.Errorf("bad event: key %q must match %s", ev.Key, keyRE)
	}
	res := &Result{Bucket: f.bucket, Key: ev.Key, Table: f.table, Logged: f.name}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		res.RequestID = lc.AwsRequestID
	}
	if !f.ready {
		if err := f.ensureBucket(ctx); err != nil {
			return nil, err
		}
		if err := f.ensureTable(ctx); err != nil {
			return nil, err
		}
		f.ready = true
	}
	obj, err := f.objectRoundTrip(ctx, ev)
	if err != nil {
		return nil, err
	}
	res.Object = obj
	item, err := f.itemRoundTrip(ctx, ev)
	if err != nil {
		return nil, err
	}
	res.Item = item
	if err := f.log(ctx, res); err != nil {
		return nil, err
	}
	return res, nil
}

func (f *function) ensureBucket(ctx context.Context) error {
	_, err := f.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(f.bucket)})
	var owned *s3types.BucketAlreadyOwnedByYou
	var exists *s3types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return fmt.Errorf("create bucket %s: %w", f.bucket, err)
	}
	return nil
}

func (f *function) ensureTable(ctx context.Context) error {
	_, err := f.ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(f.table),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: ddbtypes.KeyTypeHash}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	})
	var inUse *ddbtypes.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("create table %s: %w", f.table, err)
	}
	w := dynamodb.NewTableExistsWaiter(f.ddb, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 50 * time.Millisecond
		o.MaxDelay = 500 * time.Millisecond
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(f.table)}, 30*time.Second); err != nil {
		return fmt.Errorf("wait for table %s: %w", f.table, err)
	}
	return nil
}

func (f *function) objectRoundTrip(ctx context.Context, ev Event) (string, error) {
	_, err := f.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(f.bucket),
		Key:         aws.String(ev.Key),
		Body:        strings.NewReader(ev.Body),
		ContentType: aws.String("text/plain"),
	})
	if err != nil {
		return "", fmt.Errorf("put object %s/%s: %w", f.bucket, ev.Key, err)
	}
	out, err := f.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(ev.Key)})
	if err != nil {
		return "", fmt.Errorf("get object %s/%s: %w", f.bucket, ev.Key, err)
	}
	defer func() { _ = out.Body.Close() }()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return "", fmt.Errorf("read object %s/%s: %w", f.bucket, ev.Key, err)
	}
	return string(b), nil
}

func (f *function) itemRoundTrip(ctx context.Context, ev Event) (string, error) {
	_, err := f.ddb.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(f.table),
		Item: map[string]ddbtypes.AttributeValue{
			"id":   &ddbtypes.AttributeValueMemberS{Value: ev.Key},
			"body": &ddbtypes.AttributeValueMemberS{Value: ev.Body},
		},
	})
	if err != nil {
		return "", fmt.Errorf("put item %s/%s: %w", f.table, ev.Key, err)
	}
	out, err := f.ddb.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(f.table),
		Key:            map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: ev.Key}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("get item %s/%s: %w", f.table, ev.Key, err)
	}
	body, ok := out.Item["body"].(*ddbtypes.AttributeValueMemberS)
	if !ok {
		return "", fmt.Errorf("get item %s/%s: no string attribute body in %d attributes", f.table, ev.Key, len(out.Item))
	}
	return body.Value, nil
}

// log pushes one line to VictoriaLogs' JSON-lines ingest, with the function
// name as the stream field and the request ID and key as fields.
func (f *function) log(ctx context.Context, res *Result) error {
	line, err := json.Marshal(map[string]string{
		"_msg":       fmt.Sprintf("stored %s in s3://%s and %s", res.Key, res.Bucket, res.Table),
		"function":   res.Logged,
		"request_id": res.RequestID,
		"key":        res.Key,
	})
	if err != nil {
		return fmt.Errorf("encode log line: %w", err)
	}
	url := f.logsURL + "/insert/jsonline?_stream_fields=function"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(append(line, '\n')))
	if err != nil {
		return fmt.Errorf("push log line: %w", err)
	}
	req.Header.Set("Content-Type", "application/stream+json")
	resp, err := f.http.Do(req)
	if err != nil {
		return fmt.Errorf("push log line: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("push log line: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}
