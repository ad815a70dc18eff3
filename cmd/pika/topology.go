package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pika-go/pika"
)

const declareHelp = `Usage: pika declare queue NAME [FLAGS]
       pika declare exchange NAME TYPE [FLAGS]

Declares a queue or an exchange; run "pika declare queue --help" or "pika
declare exchange --help" for the flags of each.
`

const declareQueueHelp = `Usage: pika declare queue NAME [FLAGS]

Declares the queue NAME and prints its name, its message count and its
consumer count, tab-separated: "NAME<TAB>messages=N<TAB>consumers=N". An
empty NAME ("") asks the broker to choose a name (amq.gen-...), which is
printed. Declaring an existing queue with other settings fails with 406
PRECONDITION_FAILED.

Flags:
  --durable        the queue survives a broker restart
  --exclusive      only this connection may use the queue, and the broker
                   deletes it when the connection closes: with pika that is
                   as soon as this command exits, so this is of little use
                   from the command line
  --auto-delete    the broker deletes the queue when its last consumer
                   goes away (not before it had one)
  --type TYPE      classic, quorum or stream (x-queue-type; quorum and
                   stream queues must be --durable)
  --arg KEY=VALUE  a queue argument (repeatable), e.g. --arg x-max-length=1000
                   --arg x-message-ttl=60000 --arg x-dead-letter-exchange=dlx.
                   Without a type, a decimal integer VALUE is sent as an
                   integer, true/false as a boolean, anything else as a
                   string; force a type with KEY:TYPE=VALUE (TYPE string,
                   int, float or bool): --arg x-note:string=42
  --passive        only check that the queue exists (and print its counts);
                   404 NOT_FOUND when it does not
  --json           print {"queue": NAME, "messages": N, "consumers": N}
  --url URL        broker URL (see pika --help)
`

const declareExchangeHelp = `Usage: pika declare exchange NAME TYPE [FLAGS]

Declares the exchange NAME of TYPE: direct, fanout, topic, headers, or a
plugin's type (x-delayed-message, x-consistent-hash, ...). Prints nothing.
Declaring an existing exchange with other settings fails with 406
PRECONDITION_FAILED.

Flags:
  --durable        the exchange survives a broker restart
  --auto-delete    the broker deletes the exchange when its last binding
                   goes away
  --internal       clients cannot publish to it; only exchange-to-exchange
                   bindings feed it
  --arg KEY=VALUE  an exchange argument (repeatable), typed as for declare
                   queue: --arg alternate-exchange=unrouted
  --passive        only check that the exchange exists
  --url URL        broker URL (see pika --help)
`

func runDeclare(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usagef("declare", "missing what to declare: queue or exchange")
	}
	switch args[0] {
	case "queue":
		return declareQueue(ctx, e, args[1:])
	case "exchange":
		return declareExchange(ctx, e, args[1:])
	case "-h", "-help", "--help":
		io.WriteString(e.stdout, declareHelp)
		return errHelp
	}
	return usagef("declare", "%q: want queue or exchange", args[0])
}

func declareQueue(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "declare queue", declareQueueHelp)
	var opts pika.QueueDeclareOptions
	fs.BoolVar(&opts.Durable, "durable", false, "durable")
	fs.BoolVar(&opts.Exclusive, "exclusive", false, "exclusive")
	fs.BoolVar(&opts.AutoDelete, "auto-delete", false, "auto-delete")
	typ := fs.String("type", "", "queue type")
	var argSpecs multiFlag
	fs.Var(&argSpecs, "arg", "queue argument")
	passive := fs.Bool("passive", false, "check only")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := fs.args(pos, "NAME"); err != nil {
		return err
	}
	if opts.Arguments, err = parseTable("arg", argSpecs, true); err != nil {
		return usagef(fs.cmd, "%v", err)
	}
	switch *typ {
	case "":
	case "classic", "quorum", "stream":
		if _, ok := opts.Arguments["x-queue-type"]; ok {
			return usagef(fs.cmd, "--type and --arg x-queue-type both given")
		}
		if opts.Arguments == nil {
			opts.Arguments = pika.Table{}
		}
		opts.Arguments["x-queue-type"] = *typ
	default:
		return usagef(fs.cmd, "--type %q: want classic, quorum or stream", *typ)
	}
	name := pos[0]
	if *passive && (opts.Durable || opts.Exclusive || opts.AutoDelete || opts.Arguments != nil) {
		return usagef(fs.cmd, "--passive takes no queue settings")
	}
	s, err := open(ctx, e, "pika declare queue")
	if err != nil {
		return err
	}
	var q pika.Queue
	if *passive {
		q, err = s.ch.QueueDeclarePassive(ctx, name)
	} else {
		q, err = s.ch.QueueDeclare(ctx, name, opts)
	}
	if err == nil {
		if *asJSON {
			err = newJSONWriter(e.stdout).write(map[string]any{"queue": q.Name, "messages": q.Messages, "consumers": q.Consumers})
		} else {
			_, err = fmt.Fprintf(e.stdout, "%s\tmessages=%d\tconsumers=%d\n", q.Name, q.Messages, q.Consumers)
		}
	} else {
		err = opError(fmt.Sprintf("declare queue %q", name), err)
	}
	return finish(s, err)
}

func declareExchange(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "declare exchange", declareExchangeHelp)
	var opts pika.ExchangeDeclareOptions
	fs.BoolVar(&opts.Durable, "durable", false, "durable")
	fs.BoolVar(&opts.AutoDelete, "auto-delete", false, "auto-delete")
	fs.BoolVar(&opts.Internal, "internal", false, "internal")
	var argSpecs multiFlag
	fs.Var(&argSpecs, "arg", "exchange argument")
	passive := fs.Bool("passive", false, "check only")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if *passive {
		if len(pos) == 1 {
			pos = append(pos, "")
		}
	}
	if err := fs.args(pos, "NAME", "TYPE"); err != nil {
		return err
	}
	if opts.Arguments, err = parseTable("arg", argSpecs, true); err != nil {
		return usagef(fs.cmd, "%v", err)
	}
	name, kind := pos[0], pos[1]
	if !*passive && kind == "" {
		return usagef(fs.cmd, "empty exchange TYPE")
	}
	s, err := open(ctx, e, "pika declare exchange")
	if err != nil {
		return err
	}
	if *passive {
		err = s.ch.ExchangeDeclarePassive(ctx, name)
	} else {
		err = s.ch.ExchangeDeclare(ctx, name, kind, opts)
	}
	return finish(s, opError(fmt.Sprintf("declare exchange %q", name), err))
}

const bindHelp = `Usage: pika bind [FLAGS] QUEUE EXCHANGE ROUTING_KEY
       pika bind --exchange [FLAGS] DESTINATION SOURCE ROUTING_KEY

Binds QUEUE to EXCHANGE with ROUTING_KEY (a pattern for topic exchanges;
ignored by fanout; "" is allowed). With --exchange, binds the exchange
DESTINATION to the exchange SOURCE instead (a RabbitMQ extension).

Flags:
  --exchange       exchange-to-exchange binding
  --arg KEY=VALUE  a binding argument (repeatable), typed as for declare
                   queue; headers exchanges match on these:
                   --arg x-match=all --arg format=pdf
  --url URL        broker URL (see pika --help)
`

const unbindHelp = `Usage: pika unbind [FLAGS] QUEUE EXCHANGE ROUTING_KEY
       pika unbind --exchange [FLAGS] DESTINATION SOURCE ROUTING_KEY

Removes a binding made by pika bind; the routing key and arguments must be
the same as the binding's.

Flags:
  --exchange       exchange-to-exchange binding
  --arg KEY=VALUE  a binding argument (repeatable), as given to bind
  --url URL        broker URL (see pika --help)
`

func runBind(ctx context.Context, e *env, args []string) error   { return bind(ctx, e, args, true) }
func runUnbind(ctx context.Context, e *env, args []string) error { return bind(ctx, e, args, false) }

func bind(ctx context.Context, e *env, args []string, doBind bool) error {
	cmd, help := "bind", bindHelp
	if !doBind {
		cmd, help = "unbind", unbindHelp
	}
	fs := newFlagSet(e, cmd, help)
	e2e := fs.Bool("exchange", false, "exchange-to-exchange")
	var argSpecs multiFlag
	fs.Var(&argSpecs, "arg", "binding argument")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	want := []string{"QUEUE", "EXCHANGE", "ROUTING_KEY"}
	if *e2e {
		want = []string{"DESTINATION", "SOURCE", "ROUTING_KEY"}
	}
	if err := fs.args(pos, want...); err != nil {
		return err
	}
	bargs, err := parseTable("arg", argSpecs, true)
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	dest, src, key := pos[0], pos[1], pos[2]
	s, err := open(ctx, e, "pika "+cmd)
	if err != nil {
		return err
	}
	kind := "queue"
	if *e2e {
		kind = "exchange"
	}
	switch {
	case doBind && *e2e:
		err = s.ch.ExchangeBind(ctx, dest, src, key, pika.BindOptions{Arguments: bargs})
	case doBind:
		err = s.ch.QueueBind(ctx, dest, src, key, pika.BindOptions{Arguments: bargs})
	case *e2e:
		err = s.ch.ExchangeUnbind(ctx, dest, src, key, pika.BindOptions{Arguments: bargs})
	default:
		err = s.ch.QueueUnbind(ctx, dest, src, key, pika.BindOptions{Arguments: bargs})
	}
	return finish(s, opError(fmt.Sprintf("%s %s %q to exchange %q with routing key %q", cmd, kind, dest, src, key), err))
}

const deleteHelp = `Usage: pika delete queue NAME [--if-unused] [--if-empty]
       pika delete exchange NAME [--if-unused]

Deletes a queue, printing how many messages it held ("messages=N"), or an
exchange (printing nothing). Deleting what does not exist succeeds.

Flags:
  --if-unused  only if the queue has no consumers / the exchange has no
               bindings (else 406 PRECONDITION_FAILED)
  --if-empty   queue only: only if it holds no messages (else 406)
  --url URL    broker URL (see pika --help)
`

func runDelete(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usagef("delete", "missing what to delete: queue or exchange")
	}
	what := args[0]
	switch what {
	case "queue", "exchange":
	case "-h", "-help", "--help":
		io.WriteString(e.stdout, deleteHelp)
		return errHelp
	default:
		return usagef("delete", "%q: want queue or exchange", what)
	}
	fs := newFlagSet(e, "delete "+what, deleteHelp)
	ifUnused := fs.Bool("if-unused", false, "only if unused")
	var ifEmpty *bool
	if what == "queue" {
		ifEmpty = fs.Bool("if-empty", false, "only if empty")
	}
	pos, err := fs.parse(args[1:])
	if err != nil {
		return err
	}
	if err := fs.args(pos, "NAME"); err != nil {
		return err
	}
	name := pos[0]
	s, err := open(ctx, e, "pika delete")
	if err != nil {
		return err
	}
	if what == "queue" {
		var n int
		n, err = s.ch.QueueDelete(ctx, name, pika.QueueDeleteOptions{IfUnused: *ifUnused, IfEmpty: *ifEmpty})
		if err == nil {
			_, err = fmt.Fprintf(e.stdout, "messages=%d\n", n)
		}
	} else {
		err = s.ch.ExchangeDelete(ctx, name, pika.ExchangeDeleteOptions{IfUnused: *ifUnused})
	}
	return finish(s, opError(fmt.Sprintf("delete %s %q", what, name), err))
}

const purgeHelp = `Usage: pika purge QUEUE

Removes every ready message from QUEUE (messages delivered and not yet
acknowledged stay) and prints how many it removed ("messages=N").

Flags:
  --url URL   broker URL (see pika --help)
`

func runPurge(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "purge", purgeHelp)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := fs.args(pos, "QUEUE"); err != nil {
		return err
	}
	s, err := open(ctx, e, "pika purge")
	if err != nil {
		return err
	}
	n, err := s.ch.QueuePurge(ctx, pos[0], pika.PurgeOptions{})
	if err == nil {
		_, err = fmt.Fprintf(e.stdout, "messages=%d\n", n)
	}
	return finish(s, opError(fmt.Sprintf("purge queue %q", pos[0]), err))
}

// finish closes the session; err, when not nil, wins over a close error.
func finish(s *session, err error) error {
	cerr := s.close()
	if err != nil {
		return err
	}
	if cerr != nil {
		return opError("close", cerr)
	}
	return nil
}
