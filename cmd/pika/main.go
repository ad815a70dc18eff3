// Command pika is a command-line client for AMQP 0-9-1 brokers such as
// RabbitMQ, built on package pika: it publishes, consumes and fetches
// messages, declares, binds and deletes queues and exchanges, and generates
// load (pika perf). Run "pika --help" for the commands and exit statuses,
// and "pika COMMAND --help" for each command's flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/pika-go/pika"
)

// Exit statuses; the usage text documents them.
const (
	exitOK          = 0   // success
	exitError       = 1   // usage error, or another failure (writing output, running --exec, ...)
	exitEmpty       = 2   // nothing there: get on an empty queue
	exitUnconfirmed = 3   // publish: a message was nacked or returned
	exitConnection  = 4   // could not connect, or the connection failed
	exitRefused     = 5   // the broker refused an operation after connecting
	exitInterrupted = 130 // interrupted by a signal before it finished
)

// defaultURL is the broker URL when neither --url nor AMQP_URL is set.
const defaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// closeTimeout bounds the clean shutdown of channels and connections.
const closeTimeout = 5 * time.Second

// env is what a command sees of its process: arguments aside, its standard
// streams and environment. Tests run commands with their own env.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// stdinTTY is set when standard input is a terminal: publish then says
	// that it waits for the body.
	stdinTTY bool
	url      string // the broker URL chosen by --url, AMQP_URL or the default
	// hooks are set on every connection dial makes (perf --metrics).
	hooks []pika.Hook
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists the subcommands in the order the usage text shows them.
var commands []command

func init() {
	commands = []command{
		{"publish", "publish messages to an exchange", runPublish},
		{"consume", "consume messages from a queue and print them (or run a command per message)", runConsume},
		{"get", "fetch one message from a queue (basic.get)", runGet},
		{"declare", "declare a queue or an exchange", runDeclare},
		{"bind", "bind a queue (or an exchange) to an exchange", runBind},
		{"unbind", "remove a binding", runUnbind},
		{"delete", "delete a queue or an exchange", runDelete},
		{"purge", "remove the ready messages of a queue", runPurge},
		{"perf", "load test: producers and consumers with rates and latency (perf rpc: request/reply calls)", runPerf},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	// Writes to a closed pipe ("pika consume q | head -3") then fail with
	// EPIPE instead of killing the process, so consume can cancel its
	// consumer cleanly.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		e.stdinTTY = true
	}
	os.Exit(run(ctx, e, os.Args[1:]))
}

// usage is the text of "pika --help".
const usage = `Usage: pika [--url URL] COMMAND [ARGUMENTS] [FLAGS]

pika talks to an AMQP 0-9-1 broker (RabbitMQ).

Commands:
%s
Global flags (also accepted after any command):
  --url URL   broker URL, amqp://USER:PASS@HOST:PORT/VHOST or amqps://...
              (default: $AMQP_URL, else ` + defaultURL + `)

"pika --version" prints the version of pika (its Go module, with the VCS
revision it was built from when known) and of the Go toolchain that built
it.

Flags may come before or after the arguments; "--" ends the flags (use it
before an argument that starts with "-"). Run "pika COMMAND --help" for the
flags of a command.

Exit status:
  0    success; also consume and perf stopped by Ctrl-C / SIGTERM (they
       stop cleanly: consume cancels its consumer, perf prints its
       summary)
  1    usage error (flags, arguments, URL), or another failure (writing
       the output, starting --exec, perf --count stalled)
  2    nothing there: get found the queue empty
  3    publish --confirm: a message was nacked, or returned as unroutable
       (--mandatory)
  4    could not connect (network, TLS, authentication, virtual host), or
       the connection was lost while working (network, heartbeat timeout,
       320 CONNECTION_FORCED: broker shut down or connection closed by an
       administrator)
  5    the broker refused an operation after connecting, closing the
       channel or the connection with a reply code (e.g. 403 ACCESS_REFUSED,
       404 NOT_FOUND, 406 PRECONDITION_FAILED, 503 COMMAND_INVALID for an
       unknown exchange type)
  130  interrupted by Ctrl-C / SIGTERM (commands other than consume and
       perf)

Errors go to standard error and name what failed; passwords are never
printed.
`

// versionText is the text of "pika --version": the module version from the
// build information ("(devel)" for a build from a checkout, with its VCS
// revision when the build recorded it) and the Go version.
func versionText() string {
	version, module, vcs := "unknown", "github.com/pika-go/pika", ""
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Path != "" {
			module = info.Main.Path
		}
		if info.Main.Version != "" {
			version = info.Main.Version
		}
		var rev, modified string
		for _, st := range info.Settings {
			switch st.Key {
			case "vcs.revision":
				rev = st.Value
			case "vcs.modified":
				if st.Value == "true" {
					modified = ", modified"
				}
			}
		}
		if rev != "" {
			vcs = fmt.Sprintf(", revision %.12s%s", rev, modified)
		}
	}
	return fmt.Sprintf("pika %s (module %s%s), built with %s for %s/%s\n",
		version, module, vcs, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func printUsage(w io.Writer) {
	var b strings.Builder
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, usage, b.String())
}

// run runs the command line args (without the program name) and returns the
// exit status. It is main without the process: tests call it.
func run(ctx context.Context, e *env, args []string) int {
	e.url = e.getenv("AMQP_URL")
	if e.url == "" {
		e.url = defaultURL
	}
	// Global flags before the command: --url and --help only.
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
		switch {
		case args[0] == "--":
			args = args[1:]
			goto command
		case name == "h" || name == "help":
			printUsage(e.stdout)
			return exitOK
		case name == "version":
			io.WriteString(e.stdout, versionText())
			return exitOK
		case name == "url":
			if !hasValue {
				if len(args) < 2 {
					fmt.Fprintln(e.stderr, "pika: flag needs an argument: --url")
					return exitError
				}
				value = args[1]
				args = args[1:]
			}
			e.url = value
			args = args[1:]
		default:
			fmt.Fprintf(e.stderr, "pika: unknown global flag %s (command flags go after the command)\nRun 'pika --help' for usage.\n", args[0])
			return exitError
		}
	}
command:
	if len(args) == 0 {
		printUsage(e.stderr)
		return exitError
	}
	name := args[0]
	if name == "help" {
		if len(args) > 1 {
			// "pika help COMMAND" is "pika COMMAND --help".
			return run(ctx, e, []string{args[1], "--help"})
		}
		printUsage(e.stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			return exitStatus(e, c.run(ctx, e, args[1:]))
		}
	}
	fmt.Fprintf(e.stderr, "pika: unknown command %q\nRun 'pika --help' for usage.\n", name)
	return exitError
}

// exitErr is an error with a chosen exit status. A nil err with a status
// means the message was printed already.
type exitErr struct {
	status int
	err    error
}

func (e *exitErr) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.status)
	}
	return e.err.Error()
}

func (e *exitErr) Unwrap() error { return e.err }

// withStatus attaches an exit status to err.
func withStatus(status int, err error) error { return &exitErr{status: status, err: err} }

// errHelp is returned by flag parsing when --help was asked for and the
// usage was printed.
var errHelp = errors.New("help requested")

// exitStatus prints err (if any) to standard error and returns the exit
// status for it.
func exitStatus(e *env, err error) int {
	if err == nil || errors.Is(err, errHelp) {
		return exitOK
	}
	status := exitError
	var xe *exitErr
	switch {
	case errors.As(err, &xe):
		status = xe.status
		if xe.err == nil {
			return status
		}
	case isRefusal(err):
		status = exitRefused
	case isConnectionError(err):
		status = exitConnection
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(e.stderr, "pika: interrupted")
		return exitInterrupted
	}
	fmt.Fprintln(e.stderr, "pika: "+describe(err))
	return status
}

// describe renders err for a message that starts with "pika: ": broker
// errors as "CODE NAME - text", without the library's own "pika: " prefix.
func describe(err error) string {
	var ue *usageError
	if errors.As(err, &ue) {
		return ue.Error()
	}
	return trimPika(err.Error())
}

// trimPika removes the "pika: " prefixes that wrapped library errors
// repeat: "authentication failed: pika: connection closed ..." reads
// "authentication failed: connection closed ...".
func trimPika(s string) string {
	return strings.ReplaceAll(strings.TrimPrefix(s, "pika: "), ": pika: ", ": ")
}

// isRefusal reports whether err is the broker refusing an operation after
// the connection was made (exit status 5): a channel or connection close
// with a reply code, other than 320 CONNECTION_FORCED (the broker going
// away or an administrator closing the connection, which is a lost
// connection). A refusal while connecting (authentication, virtual host)
// is a failure to connect.
func isRefusal(err error) bool {
	var de *dialErr
	if errors.As(err, &de) {
		return false
	}
	var pe *pika.Error
	return errors.As(err, &pe) && pe.Server && !errors.Is(pe, pika.ErrConnectionForced)
}

// isConnectionError reports whether err means the connection could not be
// made or was lost (exit status 4), as opposed to a refused operation.
func isConnectionError(err error) bool {
	var de *dialErr
	if errors.As(err, &de) {
		return true
	}
	var pe *pika.Error
	if errors.As(err, &pe) {
		return pe.Conn
	}
	return errors.Is(err, pika.ErrClosed)
}

// opError names the operation that failed: "declare queue \"x\": 406
// PRECONDITION_FAILED - ...". Broker errors are shown as code and text only.
func opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return &operationError{op: op, err: err}
}

type operationError struct {
	op  string
	err error
}

func (e *operationError) Error() string { return e.op + ": " + brokerText(e.err) }
func (e *operationError) Unwrap() error { return e.err }

// brokerText renders a broker's *pika.Error as "406 PRECONDITION_FAILED -
// text" (adding "connection closed: " for connection errors) and any other
// error without its "pika: " prefix.
func brokerText(err error) string {
	var pe *pika.Error
	if errors.As(err, &pe) && pe.Server {
		s := fmt.Sprintf("%d ", int(pe.Code))
		name := pe.Code.String()
		switch {
		case strings.HasPrefix(pe.Text, name):
			s += pe.Text
		case pe.Text != "":
			s += name + " - " + pe.Text
		default:
			s += name
		}
		if pe.Conn {
			s = "connection closed by the broker: " + s
		}
		return s
	}
	var oe *operationError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	return trimPika(err.Error())
}

// dialErr is a failure to connect.
type dialErr struct {
	url string // redacted
	err error
}

func (e *dialErr) Error() string {
	return "connect to " + e.url + ": " + trimPika(e.err.Error())
}

func (e *dialErr) Unwrap() error { return e.err }

// dial connects to the broker at e.url, with recovery off (a command-line
// tool reports a lost connection instead of hiding it) and a connection
// name that shows in the broker's management UI.
func dial(ctx context.Context, e *env, name string) (*pika.Conn, error) {
	return dialWith(ctx, e, name, nil)
}

// dialWith is dial with mod, when not nil, adjusting the configuration
// (recovery included) before the dial.
func dialWith(ctx context.Context, e *env, name string, mod func(*pika.Config)) (*pika.Conn, error) {
	cfg, err := parseBrokerURL(e.url)
	if err != nil {
		return nil, err
	}
	cfg.DisableRecovery = true
	cfg.Hooks = e.hooks
	if mod != nil {
		mod(&cfg)
	}
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = name
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	conn, err := pika.DialConfig(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &dialErr{url: pika.RedactURL(e.url), err: err}
	}
	return conn, nil
}

// parseBrokerURL parses url with pika.ParseURL; its errors never contain
// the password, and they are usage errors (exit status 1).
func parseBrokerURL(url string) (pika.Config, error) {
	cfg, err := pika.ParseURL(url)
	if err != nil {
		return cfg, &usageError{msg: "--url: " + strings.TrimPrefix(err.Error(), "pika: ")}
	}
	return cfg, nil
}

// closeConn closes conn, bounded by closeTimeout, whatever ctx says.
func closeConn(conn *pika.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return conn.Close(ctx)
}

// session is a connection with one channel, as most commands use.
type session struct {
	conn *pika.Conn
	ch   *pika.Channel
}

// open dials and opens a channel.
func open(ctx context.Context, e *env, name string) (*session, error) {
	conn, err := dial(ctx, e, name)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel(ctx)
	if err != nil {
		closeConn(conn)
		return nil, opError("open channel", err)
	}
	return &session{conn: conn, ch: ch}, nil
}

// close closes the channel and the connection cleanly. It returns the
// reason the broker closed the channel, if it did (a publish it refused
// surfaces only here), or the connection's failure.
func (s *session) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var first error
	if s.ch != nil {
		s.ch.Close(ctx)
		first = s.ch.Err()
	}
	if err := s.conn.Close(ctx); err != nil && first == nil {
		first = err
	}
	return first
}

// channel returns a usable channel: the session's own, or a new one when
// the broker closed it after an error (a failed passive declare).
func (s *session) channel(ctx context.Context) (*pika.Channel, error) {
	if s.ch != nil && !s.ch.IsClosed() {
		return s.ch, nil
	}
	ch, err := s.conn.Channel(ctx)
	if err != nil {
		return nil, opError("open channel", err)
	}
	s.ch = ch
	return ch, nil
}
