package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/pika-go/pika"
)

const consumeHelp = `Usage: pika consume [FLAGS] QUEUE

Consumes messages from QUEUE and prints each body on its own line (or, with
--json, one JSON object per line), until --count messages arrived or Ctrl-C
(SIGINT or SIGTERM), which cancels the consumer cleanly and exits 0.
Messages are acknowledged once printed.

Flags:
  --count N              stop after N messages (0: no limit). Messages the
                         broker sent beyond N are not acknowledged and go
                         back to the queue.
  --prefetch N           at most N unacknowledged messages in flight (basic.qos;
                         default 100; 0: no limit). Lowered to --count.
  --no-ack               the broker does not wait for acknowledgements
                         (auto-ack): a message counts as handled once sent.
                         With --count, pika acknowledges each message on
                         arrival instead, so that none beyond the count is
                         lost.
  --json                 one JSON object per message: exchange, routing_key,
                         delivery_tag, redelivered, consumer_tag, properties
                         (present ones: content_type, delivery_mode,
                         timestamp as unix seconds, ...), headers, and body:
                         a string when the body is UTF-8, else base64 with
                         "body_encoding":"base64". Header values: numbers,
                         booleans and strings as such, byte arrays as
                         base64, timestamps as RFC 3339, decimals as
                         strings, tables and arrays nested.
  --exec CMD             run CMD with "sh -c" for each message, the body on
                         its standard input (bodies are then not printed);
                         acknowledge the message when CMD exits 0, reject it
                         otherwise. CMD sees PIKA_EXCHANGE, PIKA_ROUTING_KEY,
                         PIKA_DELIVERY_TAG, PIKA_REDELIVERED,
                         PIKA_CONTENT_TYPE, PIKA_MESSAGE_ID and
                         PIKA_CORRELATION_ID in its environment. Ctrl-C lets
                         a running CMD finish first.
  --requeue-on-failure   with --exec: a rejected message goes back to the
                         queue (default: it is dropped, or dead-lettered if
                         the queue has a dead-letter exchange)
  --raw                  print each body exactly, with nothing added (no
                         newline); only with --count 1 (bodies would run
                         together) or --output-dir
  --output-dir DIR       write each body, exactly, to its own file in DIR
                         (which must exist): 000001, 000002, ... in the
                         order of arrival; an existing file is not
                         overwritten (consume stops with an error). A
                         message is acknowledged once its file is written.
  --exclusive            ask to be the queue's only consumer
  --arg KEY=VALUE        a consumer argument (repeatable), e.g.
                         --arg x-stream-offset=first; typed as for declare
  --url URL              broker URL (see pika --help)

Examples:
  pika consume --count 1 my-queue
  pika consume --count 1 --raw my-queue > body.bin
  pika consume --output-dir ./bodies --count 100 my-queue
  pika consume --json my-queue | jq .body
  pika consume --exec 'cat >> out.txt' --prefetch 1 jobs
`

func runConsume(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "consume", consumeHelp)
	count := fs.Int("count", 0, "stop after N messages")
	prefetch := fs.Int("prefetch", 100, "prefetch count")
	noAck := fs.Bool("no-ack", false, "auto-ack")
	asJSON := fs.Bool("json", false, "JSON output")
	execCmd := fs.String("exec", "", "command per message")
	requeue := fs.Bool("requeue-on-failure", false, "requeue on --exec failure")
	exclusive := fs.Bool("exclusive", false, "exclusive consumer")
	raw := fs.Bool("raw", false, "bodies exactly")
	outDir := fs.String("output-dir", "", "one file per body")
	var argSpecs multiFlag
	fs.Var(&argSpecs, "arg", "consumer argument")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := fs.args(pos, "QUEUE"); err != nil {
		return err
	}
	if *count < 0 {
		return usagef("consume", "--count %d: must not be negative", *count)
	}
	if *prefetch < 0 || *prefetch > 65535 {
		return usagef("consume", "--prefetch %d: want 0..65535", *prefetch)
	}
	if *asJSON && *execCmd != "" {
		return usagef("consume", "--json and --exec exclude each other (--exec prints nothing)")
	}
	if *requeue && *execCmd == "" {
		return usagef("consume", "--requeue-on-failure needs --exec")
	}
	if *raw && *outDir == "" && *count != 1 {
		return usagef("consume", "--raw needs --count 1 or --output-dir: the bodies of several messages would run together")
	}
	if (*raw || *outDir != "") && (*asJSON || *execCmd != "") {
		return usagef("consume", "--raw and --output-dir exclude --json and --exec")
	}
	if *outDir != "" {
		fi, err := os.Stat(*outDir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return usagef("consume", "--output-dir %q: no such directory (create it first)", *outDir)
		case err != nil:
			return usagef("consume", "--output-dir: %v", err)
		case !fi.IsDir():
			return usagef("consume", "--output-dir %q: not a directory", *outDir)
		}
	}
	cargs, err := parseTable("arg", argSpecs, true)
	if err != nil {
		return usagef("consume", "%v", err)
	}
	queue := pos[0]

	c := &consumer{
		e: e, queue: queue, count: *count, json: *asJSON, exec: *execCmd, requeue: *requeue,
		raw: *raw, outDir: *outDir, out: bufio.NewWriter(e.stdout),
	}
	// With --count, auto-ack would let the broker push (and forget) more
	// messages than wanted: acknowledge each on arrival instead.
	c.autoAck = *noAck && c.count == 0
	c.ackOnArrival = *noAck && c.count > 0
	pf := *prefetch
	if c.count > 0 && (pf == 0 || pf > c.count) {
		pf = min(c.count, 65535)
	}

	s, err := open(ctx, e, "pika consume")
	if err != nil {
		return err
	}
	err = c.run(ctx, s, pf, pika.ConsumeOptions{AutoAck: c.autoAck, Exclusive: *exclusive, Arguments: cargs})
	if cerr := s.close(); err == nil && cerr != nil {
		err = opError(fmt.Sprintf("consume from queue %q", queue), cerr)
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil // Ctrl-C while starting
	}
	return err
}

// consumer runs one consume command.
type consumer struct {
	e                     *env
	queue                 string
	count                 int
	json                  bool
	exec                  string
	requeue               bool
	raw                   bool   // bodies exactly, no newline
	outDir                string // one file per body
	autoAck, ackOnArrival bool
	out                   *bufio.Writer
	n                     int // messages handled
}

func (c *consumer) run(ctx context.Context, s *session, prefetch int, opts pika.ConsumeOptions) error {
	what := fmt.Sprintf("consume from queue %q", c.queue)
	if prefetch > 0 {
		if err := s.ch.Qos(ctx, pika.QosOptions{PrefetchCount: prefetch}); err != nil {
			return opError("basic.qos", err)
		}
	}
	cons, err := s.ch.Consume(ctx, c.queue, opts)
	if err != nil {
		return opError(what, err)
	}
	var loopErr error
	for c.count == 0 || c.n < c.count {
		d, err := cons.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				loopErr = c.ended(what, err)
			}
			break
		}
		if err := c.handle(ctx, d); err != nil {
			if !errors.Is(err, syscall.EPIPE) {
				loopErr = err
			}
			// else: the reader of standard output went away ("| head
			// -3"): stop cleanly; the unprinted message is requeued.
			break
		}
	}
	// Stop: basic.cancel, bounded even after Ctrl-C.
	cctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := cons.Cancel(cctx); err != nil && loopErr == nil {
		loopErr = opError("cancel the consumer", err)
	}
	if c.autoAck && loopErr == nil {
		// Auto-acknowledged messages still buffered are handled, not lost.
		for {
			d, err := cons.Next(cctx)
			if err != nil {
				break
			}
			if err := c.handle(cctx, d); err != nil {
				loopErr = err
				break
			}
		}
	}
	if err := c.out.Flush(); err != nil && loopErr == nil && !errors.Is(err, syscall.EPIPE) {
		loopErr = fmt.Errorf("writing to standard output: %w", err)
	}
	return loopErr
}

// ended explains why the consumer stopped delivering.
func (c *consumer) ended(what string, err error) error {
	if errors.Is(err, pika.ErrConsumerCancelled) {
		return fmt.Errorf("%s: the broker cancelled the consumer (was the queue deleted?)", what)
	}
	return opError(what, err)
}

// handle prints or executes one delivery and settles it.
func (c *consumer) handle(ctx context.Context, d *pika.Delivery) error {
	c.n++
	if c.ackOnArrival {
		if err := d.Ack(false); err != nil {
			return opError("ack", err)
		}
	}
	if c.exec != "" {
		return c.runExec(d)
	}
	if err := c.print(d); err != nil {
		return err
	}
	if !c.autoAck && !c.ackOnArrival {
		if err := d.Ack(false); err != nil {
			return opError("ack", err)
		}
	}
	return nil
}

func (c *consumer) print(d *pika.Delivery) error {
	if c.outDir != "" {
		return c.writeFile(d)
	}
	var err error
	switch {
	case c.raw:
		_, err = c.out.Write(d.Body)
	case c.json:
		err = newJSONWriter(c.out).write(toJSON(d, false))
	default:
		c.out.Write(d.Body)
		err = c.out.WriteByte('\n')
	}
	if err == nil {
		err = c.out.Flush()
	}
	if err != nil {
		return fmt.Errorf("writing to standard output: %w", err)
	}
	return nil
}

// writeFile writes d's body to the next file of --output-dir; it never
// replaces an existing file.
func (c *consumer) writeFile(d *pika.Delivery) error {
	name := filepath.Join(c.outDir, fmt.Sprintf("%06d", c.n))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("--output-dir: %w", err)
	}
	_, err = f.Write(d.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name) // not acknowledged: the message goes back to the queue
		return fmt.Errorf("--output-dir: writing %s: %w", name, err)
	}
	return nil
}

// runExec runs --exec for d and acknowledges or rejects it by the exit
// status.
func (c *consumer) runExec(d *pika.Delivery) error {
	cmd := exec.Command("sh", "-c", c.exec)
	cmd.Stdin = bytes.NewReader(d.Body)
	cmd.Stdout = c.e.stdout
	cmd.Stderr = c.e.stderr
	cmd.Env = append(os.Environ(),
		"PIKA_EXCHANGE="+d.Exchange,
		"PIKA_ROUTING_KEY="+d.RoutingKey,
		"PIKA_DELIVERY_TAG="+strconv.FormatUint(d.DeliveryTag, 10),
		"PIKA_REDELIVERED="+strconv.FormatBool(d.Redelivered),
		"PIKA_CONTENT_TYPE="+d.ContentType,
		"PIKA_MESSAGE_ID="+d.MessageID,
		"PIKA_CORRELATION_ID="+d.CorrelationID,
	)
	cmd.WaitDelay = time.Second // do not hang on pipes a background child keeps open
	runErr := cmd.Run()
	var ee *exec.ExitError
	if runErr != nil && !errors.As(runErr, &ee) {
		return fmt.Errorf("--exec %q: %w", c.exec, runErr)
	}
	if runErr == nil {
		if c.autoAck || c.ackOnArrival {
			return nil
		}
		if err := d.Ack(false); err != nil {
			return opError("ack", err)
		}
		return nil
	}
	fate := "already acknowledged (--no-ack)"
	if !c.autoAck && !c.ackOnArrival {
		fate = "rejected (dropped or dead-lettered)"
		if c.requeue {
			fate = "rejected and requeued"
		}
		if err := d.Nack(false, c.requeue); err != nil {
			return opError("nack", err)
		}
	}
	fmt.Fprintf(c.e.stderr, "pika: --exec for delivery %d (routing key %q): %v; message %s\n", d.DeliveryTag, d.RoutingKey, runErr, fate)
	return nil
}

const getHelp = `Usage: pika get [FLAGS] QUEUE

Fetches one message from QUEUE (basic.get), prints its body (or, with --json,
a JSON object as consume --json prints, with message_count, the messages
left in the queue) and acknowledges it. Exit status 2, with "queue is
empty" on stderr, when QUEUE has no message.

Flags:
  --no-ack     the broker removes the message as it sends it (auto-ack)
  --requeue    print the message and put it back (a peek; it comes back
               marked redelivered)
  --json       JSON output (see pika consume --help)
  --raw        print the body exactly, with nothing added (no newline)
  --url URL    broker URL (see pika --help)
`

func runGet(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "get", getHelp)
	noAck := fs.Bool("no-ack", false, "auto-ack")
	requeue := fs.Bool("requeue", false, "put the message back")
	asJSON := fs.Bool("json", false, "JSON output")
	raw := fs.Bool("raw", false, "body exactly")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := fs.args(pos, "QUEUE"); err != nil {
		return err
	}
	if *noAck && *requeue {
		return usagef("get", "--no-ack and --requeue exclude each other")
	}
	if *raw && *asJSON {
		return usagef("get", "--raw and --json exclude each other")
	}
	queue := pos[0]
	s, err := open(ctx, e, "pika get")
	if err != nil {
		return err
	}
	err = get(ctx, e, s, queue, *noAck, *requeue, *asJSON, *raw)
	if cerr := s.close(); err == nil && cerr != nil {
		err = opError(fmt.Sprintf("get from queue %q", queue), cerr)
	}
	return err
}

func get(ctx context.Context, e *env, s *session, queue string, noAck, requeue, asJSON, raw bool) error {
	what := fmt.Sprintf("get from queue %q", queue)
	d, ok, err := s.ch.Get(ctx, queue, pika.GetOptions{AutoAck: noAck})
	if err != nil {
		return opError(what, err)
	}
	if !ok {
		return withStatus(exitEmpty, fmt.Errorf("%s: queue is empty", what))
	}
	var w io.Writer = e.stdout
	switch {
	case asJSON:
		err = newJSONWriter(w).write(toJSON(d, true))
	case raw:
		_, err = w.Write(d.Body)
	default:
		_, err = w.Write(append(d.Body, '\n'))
	}
	if err != nil {
		// Not acknowledged: the broker requeues it when the channel closes.
		return fmt.Errorf("writing to standard output: %w", err)
	}
	switch {
	case noAck:
	case requeue:
		err = d.Nack(false, true)
	default:
		err = d.Ack(false)
	}
	return opError("acknowledge", err)
}
