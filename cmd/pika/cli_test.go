package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pika-go/pika"
	"github.com/pika-go/pika/engine"
	"github.com/pika-go/pika/wire"
)

// runCLI runs a command line in process and returns its exit status and
// outputs. Only commands that fail before connecting belong here.
func runCLI(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
		getenv: func(k string) string { return vars[k] }}
	code := run(context.Background(), e, args)
	return code, stdout.String(), stderr.String()
}

func TestParseField(t *testing.T) {
	tests := []struct {
		spec  string
		infer bool
		key   string
		value any
		err   string
	}{
		{spec: "a=b", key: "a", value: "b"},
		{spec: "a=", key: "a", value: ""},
		{spec: "a=b=c", key: "a", value: "b=c"},
		{spec: "a=5", key: "a", value: "5"},
		{spec: "a=5", infer: true, key: "a", value: int64(5)},
		{spec: "a=-5", infer: true, key: "a", value: int64(-5)},
		{spec: "a=true", infer: true, key: "a", value: true},
		{spec: "a=false", infer: true, key: "a", value: false},
		{spec: "a=True", infer: true, key: "a", value: "True"},
		{spec: "a=5.5", infer: true, key: "a", value: "5.5"},
		{spec: "a=99999999999999999999", infer: true, key: "a", value: "99999999999999999999"},
		{spec: "a:int=5", key: "a", value: int64(5)},
		{spec: "a:int=-9223372036854775808", key: "a", value: int64(-9223372036854775808)},
		{spec: "a:float=2.5", key: "a", value: 2.5},
		{spec: "a:bool=true", key: "a", value: true},
		{spec: "a:bool=0", key: "a", value: false},
		{spec: "a:string=5", infer: true, key: "a", value: "5"},
		{spec: "a:str=x", key: "a", value: "x"},
		{spec: "x-a:b:string=v", key: "x-a:b", value: "v"},
		{spec: "a:int=x", err: `"a:int=x": "x" is not a 64-bit integer`},
		{spec: "a:int=99999999999999999999", err: "is not a 64-bit integer"},
		{spec: "a:float=x", err: "is not a number"},
		{spec: "a:bool=yes", err: "is not a boolean"},
		{spec: "a:itn=5", err: `unknown type "itn"`},
		{spec: "a:b=v", err: `unknown type "b"`},
		{spec: "novalue", err: "want KEY=VALUE"},
		{spec: "=v", err: "empty key"},
		{spec: ":int=5", err: "empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			k, v, err := parseField(tt.spec, tt.infer)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseField(%q) error = %v, want one containing %q", tt.spec, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseField(%q): %v", tt.spec, err)
			}
			if k != tt.key || v != tt.value {
				t.Errorf("parseField(%q) = %q, %#v; want %q, %#v", tt.spec, k, v, tt.key, tt.value)
			}
		})
	}
}

func TestParseTable(t *testing.T) {
	got, err := parseTable("arg", []string{"x-max-length=10", "x-dead-letter-exchange=dlx", "flag:bool=1"}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := pika.Table{"x-max-length": int64(10), "x-dead-letter-exchange": "dlx", "flag": true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseTable = %v, want %v", got, want)
	}
	if got, err := parseTable("arg", nil, true); got != nil || err != nil {
		t.Errorf("parseTable(nil) = %v, %v; want nil, nil", got, err)
	}
	if _, err := parseTable("header", []string{"a=1", "a:int=2"}, false); err == nil || !strings.Contains(err.Error(), `--header: key "a" given twice`) {
		t.Errorf("duplicate key: error = %v", err)
	}
	if _, err := parseTable("header", []string{"a"}, false); err == nil || !strings.HasPrefix(err.Error(), "--header ") {
		t.Errorf("bad spec: error = %v, want it to name --header", err)
	}
}

func TestProperties(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 500, time.UTC)
	t.Run("all", func(t *testing.T) {
		p := propFlags{
			contentType: "application/json", contentEncoding: "gzip", deliveryMode: "persistent",
			priority: "0", correlationID: "c1", replyTo: "r", expiration: "60000", messageID: "m1",
			timestamp: "now", typ: "t", userID: "guest", appID: "app", clusterID: "cl",
			headers: multiFlag{"n:int=5", "s=5", "b:bool=true"},
		}
		got, err := p.properties(now)
		if err != nil {
			t.Fatal(err)
		}
		want := pika.Properties{
			ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: 2, Priority: 0,
			CorrelationID: "c1", ReplyTo: "r", Expiration: "60000", MessageID: "m1",
			Timestamp: now.Truncate(time.Second), Type: "t", UserID: "guest", AppID: "app", ClusterID: "cl",
			Headers: pika.Table{"n": int64(5), "s": "5", "b": true},
			Flags:   wire.FlagPriority,
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Errorf("properties =\n%+v\nwant\n%+v", got, want)
		}
	})
	t.Run("none", func(t *testing.T) {
		var p propFlags
		got, err := p.properties(now)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", pika.Properties{}) {
			t.Errorf("no flags: properties = %+v, want zero", got)
		}
	})
	modes := map[string]uint8{"1": 1, "2": 2, "transient": 1, "Persistent": 2, "non-persistent": 1}
	for in, want := range modes {
		got, err := parseDeliveryMode(in)
		if err != nil || got != want {
			t.Errorf("parseDeliveryMode(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	stamps := map[string]time.Time{
		"now":                  now.Truncate(time.Second),
		"0":                    time.Unix(0, 0),
		"1700000000":           time.Unix(1700000000, 0),
		"2024-01-02T03:04:05Z": time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	for in, want := range stamps {
		got, err := parseTimestamp(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTimestamp(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := []struct {
		p   propFlags
		err string
	}{
		{propFlags{deliveryMode: "3"}, "--delivery-mode"},
		{propFlags{priority: "256"}, "--priority"},
		{propFlags{priority: "-1"}, "--priority"},
		{propFlags{timestamp: "-5"}, "out of range"},
		{propFlags{timestamp: "yesterday"}, "--timestamp"},
		{propFlags{timestamp: "1969-12-31T23:59:59Z"}, "before 1970"},
		{propFlags{headers: multiFlag{"x:int=a"}}, "--header"},
	}
	for _, b := range bad {
		if _, err := b.p.properties(now); err == nil || !strings.Contains(err.Error(), b.err) {
			t.Errorf("properties(%+v) error = %v, want one containing %q", b.p, err, b.err)
		}
	}
}

func TestFlagSetParse(t *testing.T) {
	newFS := func() (*flagSet, *bool, *string, *env) {
		e := &env{stdout: new(bytes.Buffer), stderr: new(bytes.Buffer)}
		fs := newFlagSet(e, "test", "help text\n")
		b := fs.Bool("b", false, "")
		s := fs.String("s", "", "")
		return fs, b, s, e
	}
	tests := []struct {
		args []string
		pos  []string
		b    bool
		s    string
		url  string
	}{
		{args: []string{"x", "y"}, pos: []string{"x", "y"}},
		{args: []string{"x", "-b", "y", "--s", "v"}, pos: []string{"x", "y"}, b: true, s: "v"},
		{args: []string{"--s=v", "x", "--b=false"}, pos: []string{"x"}, s: "v"},
		{args: []string{"", "--s", "-x"}, pos: []string{""}, s: "-x"},
		{args: []string{"--s", "", "x"}, pos: []string{"x"}},
		{args: []string{"x", "--", "-b", "--s"}, pos: []string{"x", "-b", "--s"}},
		{args: []string{"-", "x"}, pos: []string{"-", "x"}},
		{args: []string{"--url", "amqp://h/", "x"}, pos: []string{"x"}, url: "amqp://h/"},
	}
	for _, tt := range tests {
		fs, b, s, e := newFS()
		pos, err := fs.parse(tt.args)
		if err != nil {
			t.Errorf("parse(%q): %v", tt.args, err)
			continue
		}
		if fmt.Sprintf("%q", pos) != fmt.Sprintf("%q", tt.pos) || *b != tt.b || *s != tt.s || e.url != tt.url {
			t.Errorf("parse(%q) = %q, b=%v s=%q url=%q; want %q, b=%v s=%q url=%q", tt.args, pos, *b, *s, e.url, tt.pos, tt.b, tt.s, tt.url)
		}
	}

	fs, _, _, e := newFS()
	if _, err := fs.parse([]string{"x", "--help"}); !errors.Is(err, errHelp) {
		t.Errorf("--help: error = %v, want errHelp", err)
	}
	if got := e.stdout.(*bytes.Buffer).String(); got != "help text\n" {
		t.Errorf("--help printed %q", got)
	}
	// Flags are named in errors as the user wrote them.
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--nope"}, "test: unknown flag --nope\n"},
		{[]string{"x", "-nope"}, "test: unknown flag -nope\n"},
		{[]string{"--nope=1"}, "test: unknown flag --nope\n"},
		{[]string{"--s"}, "test: flag needs an argument: --s\n"},
		{[]string{"-s"}, "test: flag needs an argument: -s\n"},
		{[]string{"--b=maybe"}, "test: invalid boolean value \"maybe\" for --b: parse error\n"},
	} {
		fs, _, _, _ = newFS()
		_, err := fs.parse(tt.args)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), tt.msg) || !strings.Contains(err.Error(), "pika test --help") {
			t.Errorf("parse(%q): error = %v; want %q", tt.args, err, tt.msg)
		}
	}
	fs, _, _, _ = newFS()
	if err := fs.args([]string{"a"}, "A", "B"); err == nil || !strings.Contains(err.Error(), "missing B") {
		t.Errorf("args: error = %v", err)
	}
	if err := fs.args([]string{"a", "b", "c"}, "A", "B"); err == nil || !strings.Contains(err.Error(), `too many arguments: "c"`) {
		t.Errorf("args: error = %v", err)
	}
}

// TestHelpNamesEveryFlag checks that every command's hand-written help text
// names every flag the command defines.
func TestHelpNamesEveryFlag(t *testing.T) {
	for _, args := range [][]string{
		{"publish"}, {"consume"}, {"get"}, {"declare", "queue"}, {"declare", "exchange"},
		{"bind"}, {"unbind"}, {"delete", "queue"}, {"delete", "exchange"}, {"purge"}, {"perf"}, {"perf", "rpc"},
	} {
		name := strings.Join(args, " ")
		t.Run(name, func(t *testing.T) {
			// Every command prints its help for --help and exits 0.
			code, stdout, stderr := runCLI(t, nil, append(args, "--help")...)
			if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "Usage: pika "+args[0]) {
				t.Fatalf("pika %s --help: exit %d, stdout %q, stderr %q", name, code, stdout, stderr)
			}
			for _, f := range definedFlags(t, args) {
				if f == "l" {
					continue // -l is shown with --lines
				}
				if !regexp.MustCompile(`--` + regexp.QuoteMeta(f) + `\b`).MatchString(stdout) {
					t.Errorf("pika %s --help does not mention --%s", name, f)
				}
			}
		})
	}
}

// definedFlags returns the flag names the command defines, found by
// running it with a hook on newFlagSet.
func definedFlags(t *testing.T, args []string) []string {
	t.Helper()
	var names []string
	flagSetHook = func(fs *flag.FlagSet) {
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	}
	defer func() { flagSetHook = nil }()
	runCLI(t, nil, append(args, "--help")...)
	if len(names) == 0 {
		t.Fatalf("pika %s defines no flags", strings.Join(args, " "))
	}
	return names
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{args: []string{"--help"}, code: 0, stdout: "Exit status:"},
		{args: []string{"-h"}, code: 0, stdout: "Commands:"},
		{args: []string{"help"}, code: 0, stdout: "Commands:"},
		{args: []string{"help", "get"}, code: 0, stdout: "Usage: pika get"},
		{args: []string{"declare", "--help"}, code: 0, stdout: "pika declare exchange NAME TYPE"},
		{args: []string{"delete", "--help"}, code: 0, stdout: "pika delete queue NAME"},
		{args: nil, code: 1, stderr: "Usage: pika"},
		{args: []string{"nope"}, code: 1, stderr: `unknown command "nope"`},
		{args: []string{"--nope", "get"}, code: 1, stderr: "unknown global flag --nope"},
		{args: []string{"--url"}, code: 1, stderr: "flag needs an argument: --url"},
		{args: []string{"publish", "x"}, code: 1, stderr: "pika: publish: missing ROUTING_KEY\nRun 'pika publish --help' for usage."},
		{args: []string{"publish", "x", "y", "--priority", "256"}, code: 1, stderr: "--priority"},
		{args: []string{"publish", "x", "y", "--header", "k"}, code: 1, stderr: "want KEY=VALUE"},
		{args: []string{"consume"}, code: 1, stderr: "missing QUEUE"},
		{args: []string{"consume", "q", "--count", "-1"}, code: 1, stderr: "--count -1"},
		{args: []string{"consume", "q", "--requeue-on-failure"}, code: 1, stderr: "needs --exec"},
		{args: []string{"consume", "q", "--output-dir", "/nonexistent/pika-bodies"}, code: 1, stderr: `--output-dir "/nonexistent/pika-bodies": no such directory (create it first)`},
		{args: []string{"consume", "q", "--output-dir", "cli_test.go"}, code: 1, stderr: `--output-dir "cli_test.go": not a directory`},
		{args: []string{"get", "q", "--no-ack", "--requeue"}, code: 1, stderr: "exclude each other"},
		{args: []string{"declare"}, code: 1, stderr: "queue or exchange"},
		{args: []string{"declare", "topic"}, code: 1, stderr: `"topic": want queue or exchange`},
		{args: []string{"declare", "queue", "q", "--type", "lazy"}, code: 1, stderr: `--type "lazy"`},
		{args: []string{"declare", "queue", "q", "--type", "quorum", "--arg", "x-queue-type=classic"}, code: 1, stderr: "both given"},
		{args: []string{"declare", "queue", "q", "--passive", "--durable"}, code: 1, stderr: "--passive takes no queue settings"},
		{args: []string{"declare", "exchange", "e"}, code: 1, stderr: "missing TYPE"},
		{args: []string{"bind", "q", "e"}, code: 1, stderr: "missing ROUTING_KEY"},
		{args: []string{"bind", "--exchange", "d"}, code: 1, stderr: "missing SOURCE ROUTING_KEY"},
		{args: []string{"delete", "queue"}, code: 1, stderr: "missing NAME"},
		{args: []string{"delete", "exchange", "x", "--if-empty"}, code: 1, stderr: "-if-empty"},
		{args: []string{"perf", "--size", "7"}, code: 1, stderr: "--size 7"},
		{args: []string{"perf", "extra"}, code: 1, stderr: "too many arguments"},
		{args: []string{"--url", "http://u:s3cret@h/", "get", "q"}, code: 1, stderr: "--url: "},
		{args: []string{"get", "q", "--url", "amqp://u:s3cret@h:99999/"}, code: 1, stderr: "port"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("pika %q: exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr containing %q",
					tt.args, code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
			}
			if strings.Contains(stdout+stderr, "s3cret") {
				t.Errorf("pika %q printed the password: %q", tt.args, stdout+stderr)
			}
		})
	}
}

func TestURLPrecedence(t *testing.T) {
	// A bad URL fails before any connection, naming where it came from.
	code, _, stderr := runCLI(t, map[string]string{"AMQP_URL": "amqp://u:p@h:0/"}, "get", "q")
	if code != 1 || !strings.Contains(stderr, "--url:") {
		t.Errorf("AMQP_URL with port 0: exit %d, stderr %q", code, stderr)
	}
	// --url wins over AMQP_URL, both before and after the command.
	for _, args := range [][]string{
		{"--url", "amqp://h:70000/", "get", "q"},
		{"get", "q", "--url", "amqp://h:70000/"},
	} {
		code, _, stderr = runCLI(t, map[string]string{"AMQP_URL": "amqp://h:0/"}, args...)
		if code != 1 || !strings.Contains(stderr, "70000") {
			t.Errorf("pika %q: exit %d, stderr %q; want the --url port 70000 named", args, code, stderr)
		}
	}
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		err  error
		code int
		msg  string
	}{
		{nil, 0, ""},
		{errHelp, 0, ""},
		{errors.New("x"), 1, "pika: x\n"},
		{withStatus(exitEmpty, errors.New(`get from queue "q": queue is empty`)), 2, "pika: get from queue \"q\": queue is empty\n"},
		{withStatus(exitUnconfirmed, nil), 3, ""},
		{&dialErr{url: "amqp://u:xxxxx@h/", err: pika.ErrAuthentication}, 4,
			"pika: connect to amqp://u:xxxxx@h/: authentication failed\n"},
		{opError(`declare queue "x"`, &engine.Error{Code: 406, Text: "PRECONDITION_FAILED - inequivalent arg 'durable'", Server: true, Channel: 1}), 5,
			"pika: declare queue \"x\": 406 PRECONDITION_FAILED - inequivalent arg 'durable'\n"},
		{opError(`get from queue "x"`, &engine.Error{Code: 320, Text: "CONNECTION_FORCED - closed via management plugin", Server: true, Conn: true}), 4,
			"pika: get from queue \"x\": connection closed by the broker: 320 CONNECTION_FORCED - closed via management plugin\n"},
		{opError("consume", &engine.Error{Code: 404, Server: true, Channel: 1}), 5, "pika: consume: 404 NOT_FOUND\n"},
		{opError("consume", &engine.Error{Code: 404, Text: "no queue 'x'", Server: true, Channel: 1}), 5, "pika: consume: 404 NOT_FOUND - no queue 'x'\n"},
		// A connection-level refusal after connecting is a refusal, not a
		// failure to connect.
		{opError(`declare exchange "x"`, &engine.Error{Code: 503, Text: "COMMAND_INVALID - unknown exchange type 'bogus-type'", Server: true, Conn: true}), 5,
			"pika: declare exchange \"x\": connection closed by the broker: 503 COMMAND_INVALID - unknown exchange type 'bogus-type'\n"},
		// A refusal while connecting is a failure to connect.
		{&dialErr{url: "amqp://h/", err: &engine.Error{Code: 530, Text: "NOT_ALLOWED - vhost x not found", Server: true, Conn: true}}, 4,
			"pika: connect to amqp://h/: connection closed by server: 530 NOT_ALLOWED - vhost x not found\n"},
		{opError("publish", pika.ErrClosed), 4, "pika: publish: connection closed\n"},
		{context.Canceled, 130, "pika: interrupted\n"},
		{fmt.Errorf("publish: %w", context.Canceled), 130, "pika: interrupted\n"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		code := exitStatus(&env{stderr: &stderr}, tt.err)
		if code != tt.code || stderr.String() != tt.msg {
			t.Errorf("exitStatus(%v) = %d, printed %q; want %d, %q", tt.err, code, stderr.String(), tt.code, tt.msg)
		}
	}
}

func TestReadBodies(t *testing.T) {
	collect := func(in string, lines bool) ([]string, error) {
		out := make(chan []byte)
		errc := make(chan error, 1)
		go func() { errc <- readBodies(strings.NewReader(in), lines, out, make(chan struct{})); close(out) }()
		var got []string
		for b := range out {
			got = append(got, string(b))
		}
		return got, <-errc
	}
	tests := []struct {
		in    string
		lines bool
		want  []string
	}{
		{"hello\n", false, []string{"hello\n"}},
		{"", false, []string{""}},
		{"\xff\x00", false, []string{"\xff\x00"}},
		{"a\nb\r\n\nc", true, []string{"a", "b", "", "c"}},
		{"a\n", true, []string{"a"}},
		{"", true, nil},
	}
	for _, tt := range tests {
		got, err := collect(tt.in, tt.lines)
		if err != nil || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
			t.Errorf("readBodies(%q, lines=%v) = %q, %v; want %q", tt.in, tt.lines, got, err, tt.want)
		}
	}
	// Closing stop ends the reader without a receiver.
	stop := make(chan struct{})
	close(stop)
	if err := readBodies(strings.NewReader("a\nb\n"), true, make(chan []byte), stop); err != nil {
		t.Errorf("readBodies after stop: %v", err)
	}
}

func TestReturnText(t *testing.T) {
	r := &pika.Return{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: "ex", RoutingKey: "k"}
	if got, want := returnText(r), `312 NO_ROUTE (exchange "ex", routing key "k")`; got != want {
		t.Errorf("returnText = %q, want %q", got, want)
	}
	r.ReplyText = "no route"
	if got, want := returnText(r), `312 NO_ROUTE no route (exchange "ex", routing key "k")`; got != want {
		t.Errorf("returnText = %q, want %q", got, want)
	}
}

// TestExitStatusDocs checks that pika --help and the README list the same
// exit statuses as the code defines.
func TestExitStatusDocs(t *testing.T) {
	code := []int{exitOK, exitError, exitEmpty, exitUnconfirmed, exitConnection, exitRefused, exitInterrupted}
	var help bytes.Buffer
	printUsage(&help)
	_, table, ok := strings.Cut(help.String(), "Exit status:\n")
	if !ok {
		t.Fatal("pika --help has no exit status table")
	}
	var inHelp []int
	for _, m := range regexp.MustCompile(`(?m)^  (\d+) `).FindAllStringSubmatch(table, -1) {
		n, _ := strconv.Atoi(m[1])
		inHelp = append(inHelp, n)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var inReadme []int
	for _, m := range regexp.MustCompile(`(?m)^\| (\d+) \| `).FindAllStringSubmatch(string(readme), -1) {
		n, _ := strconv.Atoi(m[1])
		inReadme = append(inReadme, n)
	}
	if !slices.Equal(inHelp, code) || !slices.Equal(inReadme, code) {
		t.Errorf("exit statuses: code %v, pika --help %v, README %v", code, inHelp, inReadme)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := runCLI(t, nil, "--version")
	want := regexp.MustCompile(`^pika \S+ \(module [^ ,)]+(, revision [0-9a-f]+(, modified)?)?\), built with ` +
		regexp.QuoteMeta(runtime.Version()) + ` for ` + runtime.GOOS + `/` + runtime.GOARCH + "\n$")
	if code != 0 || stderr != "" || !want.MatchString(stdout) {
		t.Errorf("pika --version: exit %d, stdout %q, stderr %q; want %v", code, stdout, stderr, want)
	}
}
