package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pika-go/pika"
)

// maxBody bounds a message body read from standard input or a line of
// publish -l: RabbitMQ's default largest message is smaller still.
const maxBody = 128 << 20

// confirmWindow bounds the messages publish --confirm keeps unconfirmed.
const confirmWindow = 1024

const publishHelp = `Usage: pika publish [FLAGS] EXCHANGE ROUTING_KEY

Publishes a message to EXCHANGE ("" is the default exchange, which routes
to the queue named ROUTING_KEY). The body is --body, or else all of standard
input, byte for byte (echo adds a newline: use printf or --body to leave it
out); with -l, every line of the input (or of --body) is one message,
without its line ending.

Flags:
  --body TEXT            the message body (default: read standard input)
  -l, --lines            publish one message per line of input; a line may
                         be up to 128 MiB; empty lines publish empty bodies
  --mandatory            ask the broker to return the message when no queue
                         matches its routing key
  --confirm              wait for the broker to confirm every message (publisher
                         confirms); exit status 3 when one is nacked, or
                         returned with --mandatory (each is named on stderr).
                         Without --confirm, returned messages are reported
                         too (exit 3), but nacks are not seen.

Message properties:
  --header KEY=VALUE     a header (repeatable). VALUE is a string, or typed
                         as KEY:TYPE=VALUE with TYPE string, int (64-bit),
                         float or bool: --header retries:int=5
                         --header urgent:bool=true. A key containing ':'
                         needs an explicit type (a:b:string=v).
  --content-type TYPE    e.g. application/json
  --content-encoding ENC e.g. gzip
  --delivery-mode MODE   1 or transient, 2 or persistent
  --priority N           0..255
  --correlation-id ID
  --reply-to QUEUE
  --expiration MS        per-message TTL in milliseconds (a decimal string)
  --message-id ID
  --timestamp TIME       unix seconds, an RFC 3339 time, or "now"
  --type TYPE
  --user-id USER         must match the connection's user on RabbitMQ
  --app-id ID
  --cluster-id ID
  --url URL              broker URL (see pika --help)

Examples:
  echo hello | pika publish "" my-queue
  pika publish amq.topic logs.error --body 'disk full' --delivery-mode persistent
  seq 10 | pika publish -l --confirm "" my-queue
`

func runPublish(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "publish", publishHelp)
	var body stringFlag
	fs.Var(&body, "body", "message body")
	var lines bool
	fs.BoolVar(&lines, "l", false, "one message per line")
	fs.BoolVar(&lines, "lines", false, "one message per line")
	mandatory := fs.Bool("mandatory", false, "return unroutable messages")
	confirm := fs.Bool("confirm", false, "wait for publisher confirms")
	var pf propFlags
	pf.define(fs.FlagSet)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := fs.args(pos, "EXCHANGE", "ROUTING_KEY"); err != nil {
		return err
	}
	props, err := pf.properties(time.Now())
	if err != nil {
		return usagef("publish", "%v", err)
	}
	exchange, key := pos[0], pos[1]
	var src io.Reader = e.stdin
	if body.set {
		src = strings.NewReader(body.value)
	} else if e.stdinTTY {
		what := "the message body"
		if lines {
			what = "messages, one per line,"
		}
		fmt.Fprintf(e.stderr, "pika: reading %s from the terminal; end with Ctrl-D (or use --body)\n", what)
	}

	s, err := open(ctx, e, "pika publish")
	if err != nil {
		return err
	}
	p := &publisher{e: e, s: s, exchange: exchange, key: key, confirm: *confirm}
	err = p.run(ctx, src, lines, pika.Message{Properties: props, Mandatory: *mandatory})
	if cerr := s.close(); err == nil && cerr != nil {
		err = opError(p.what(), cerr)
	}
	if err != nil {
		return err
	}
	if p.closed != nil {
		select {
		case <-p.closed:
		case <-time.After(closeTimeout):
		}
	}
	return p.verdict()
}

// publisher publishes the messages of one publish command.
type publisher struct {
	e             *env
	s             *session
	exchange, key string
	confirm       bool
	closed        chan struct{} // closed by the channel's OnClose, with --mandatory without --confirm

	sent     int
	pending  []pendingConfirm // FIFO of unsettled confirmations
	nacked   int
	mu       sync.Mutex // guards returned and e.stderr (OnReturn runs concurrently)
	returned int
}

type pendingConfirm struct {
	n    int // the message's number, from 1
	conf *pika.Confirmation
}

func (p *publisher) what() string {
	return fmt.Sprintf("publish to exchange %q with routing key %q", p.exchange, p.key)
}

func (p *publisher) run(ctx context.Context, src io.Reader, lines bool, msg pika.Message) error {
	ch := p.s.ch
	if p.confirm {
		if err := ch.ConfirmSelect(ctx); err != nil {
			return opError("confirm.select", err)
		}
	} else if msg.Mandatory {
		// Callbacks run in order: once OnClose ran, every return that
		// came before the close was counted.
		p.closed = make(chan struct{})
		ch.OnClose(func(error) { close(p.closed) })
		ch.OnReturn(func(r *pika.Return) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.returned++
			fmt.Fprintf(p.e.stderr, "pika: a message was returned by the broker: %s\n", returnText(r))
		})
	}

	bodies := make(chan []byte)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		readErr <- readBodies(src, lines, bodies, stop)
		close(bodies)
	}()
	for {
		var b []byte
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case b, ok = <-bodies:
		}
		if !ok {
			break
		}
		msg.Body = b
		p.sent++
		if !p.confirm {
			if err := ch.Publish(ctx, p.exchange, p.key, msg); err != nil {
				return opError(p.what(), err)
			}
			continue
		}
		if len(p.pending) == confirmWindow {
			if err := p.settle(ctx); err != nil {
				return err
			}
		}
		conf, err := ch.PublishWithConfirm(ctx, p.exchange, p.key, msg)
		if err != nil {
			return opError(p.what(), err)
		}
		p.pending = append(p.pending, pendingConfirm{n: p.sent, conf: conf})
	}
	if err := <-readErr; err != nil {
		return err
	}
	if !p.confirm {
		// A round trip: the broker answers after it has routed every
		// message, returned the unroutable mandatory ones, or closed the
		// channel over one (404 for a missing exchange). After our
		// channel.close, the returns would be discarded.
		if err := ch.Qos(ctx, pika.QosOptions{}); err != nil {
			return opError(p.what(), err)
		}
	}
	for len(p.pending) > 0 {
		if err := p.settle(ctx); err != nil {
			return err
		}
	}
	return nil
}

// settle waits for the oldest unsettled confirmation and reports a refusal.
func (p *publisher) settle(ctx context.Context) error {
	pc := p.pending[0]
	p.pending = p.pending[1:]
	err := pc.conf.Wait(ctx)
	var re *pika.ReturnedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re):
		p.mu.Lock()
		defer p.mu.Unlock()
		p.returned++
		fmt.Fprintf(p.e.stderr, "pika: message %d returned by the broker: %s\n", pc.n, returnText(re.Return))
		return nil
	case errors.Is(err, pika.ErrNacked):
		p.nacked++
		p.mu.Lock()
		defer p.mu.Unlock()
		fmt.Fprintf(p.e.stderr, "pika: message %d nacked by the broker\n", pc.n)
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	var pe *pika.Error
	if errors.As(err, &pe) {
		return opError(p.what(), err) // the broker closed the channel
	}
	return opError(fmt.Sprintf("%s: message %d", p.what(), pc.n), err)
}

// verdict is the outcome once everything is settled: exit status 3 when a
// message was nacked or returned.
func (p *publisher) verdict() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.nacked == 0 && p.returned == 0 {
		return nil
	}
	return withStatus(exitUnconfirmed, fmt.Errorf("%s: %d of %d messages not accepted (%d returned, %d nacked)",
		p.what(), p.nacked+p.returned, p.sent, p.returned, p.nacked))
}

// returnText describes a returned message: "312 NO_ROUTE (exchange "x",
// routing key "y")".
func returnText(r *pika.Return) string {
	text := r.ReplyText
	if name := r.ReplyCode.String(); !strings.HasPrefix(text, name) {
		text = strings.TrimSpace(name + " " + text)
	}
	return fmt.Sprintf("%d %s (exchange %q, routing key %q)", int(r.ReplyCode), text, r.Exchange, r.RoutingKey)
}

// readBodies reads the message bodies from r, the whole input or one per
// line, and sends each to out until stop is closed.
func readBodies(r io.Reader, lines bool, out chan<- []byte, stop <-chan struct{}) error {
	send := func(b []byte) bool {
		select {
		case out <- b:
			return true
		case <-stop:
			return false
		}
	}
	if !lines {
		b, err := io.ReadAll(io.LimitReader(r, maxBody+1))
		if err != nil {
			return fmt.Errorf("reading the message body from standard input: %w", err)
		}
		if len(b) > maxBody {
			return fmt.Errorf("the message body on standard input is larger than %d MiB", maxBody>>20)
		}
		send(b)
		return nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxBody)
	n := 0
	for sc.Scan() {
		n++
		if !send(append([]byte(nil), sc.Bytes()...)) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d of the input is longer than %d MiB", n+1, maxBody>>20)
		}
		return fmt.Errorf("reading line %d of the input: %w", n+1, err)
	}
	return nil
}
