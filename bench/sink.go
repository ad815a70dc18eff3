package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pika-go/pika/wire"
)

// The sink is a minimal AMQP 0-9-1 server that accepts a connection, opens
// channels, answers queue.declare, and otherwise discards what it reads,
// counting basic.publish methods. It measures a client alone: no broker
// work, and it runs in a child process so that the bench's RUSAGE_SELF
// counts the client's CPU only.
//
// The parent talks to the child over its stdin and stdout, one line each:
//
//	child:  "addr 127.0.0.1:PORT"   once, when it listens
//	parent: "expect N"               the next connection's publish target
//	child:  "ok"
//	child:  "reached N"              a connection has sent N basic.publish
//
// The child exits when its stdin reaches EOF, so it never outlives the
// parent.

// sinkEnv, set to "1" in a process's environment, makes it run as the sink
// (used for the bench binary and the test binary alike).
const sinkEnv = "PIKA_BENCH_SINK"

// sinkReadBuffer is the size of the sink's socket read buffer.
const sinkReadBuffer = 256 << 10

// sinkHeartbeatEnv, set to a number of seconds in the sink's environment,
// makes it propose that heartbeat interval and keep every connection
// alive with heartbeats of its own (the idle mode's many connections), with
// a small read buffer per connection. Unset, the sink proposes none.
const sinkHeartbeatEnv = "PIKA_BENCH_SINK_HEARTBEAT"

// sinkHeartbeat returns the heartbeat interval of sinkHeartbeatEnv, or 0.
func sinkHeartbeat() uint16 {
	n, err := strconv.ParseUint(os.Getenv(sinkHeartbeatEnv), 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

// sinkServer serves sink connections. It is safe for concurrent use.
type sinkServer struct {
	ln     net.Listener
	target atomic.Int64 // basic.publish count to report; 0: none

	outMu sync.Mutex
	out   io.Writer
}

// runSinkChild is the child process's main: it serves until stdin closes.
func runSinkChild() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("sink: listen: %w", err)
	}
	s := &sinkServer{ln: ln, out: os.Stdout}
	s.println("addr " + ln.Addr().String())
	go s.serve()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "expect "); ok {
			n, err := strconv.ParseInt(rest, 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("sink: bad expect line %q", line)
			}
			s.target.Store(n)
			s.println("ok")
			continue
		}
		return fmt.Errorf("sink: unknown command %q", line)
	}
	ln.Close()
	return sc.Err()
}

func (s *sinkServer) println(line string) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintln(s.out, line)
}

func (s *sinkServer) serve() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer nc.Close()
			if err := s.handle(nc); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
				fmt.Fprintln(os.Stderr, "sink:", err)
			}
		}()
	}
}

// sinkConn is one client connection of the sink.
type sinkConn struct {
	nc net.Conn
	// hb is the interval of the sink's own heartbeats (0: none); nextHB
	// when the next is due. readFrame sends them while it waits.
	hb     time.Duration
	nextHB time.Time
	buf    []byte // read buffer
	r      int    // start of unparsed bytes in buf
	w      int    // end of read bytes in buf
	out    []byte
}

// readFrame returns the next frame, reading as needed. The frame aliases
// the read buffer until the next call.
func (c *sinkConn) readFrame() (wire.Frame, error) {
	for {
		f, n, err := wire.ParseFrame(c.buf[c.r:c.w], wire.DefaultMaxFrameSize)
		if err != nil {
			return wire.Frame{}, err
		}
		if n > 0 {
			c.r += n
			return f, nil
		}
		if c.r > 0 {
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		}
		if c.hb > 0 {
			c.nc.SetReadDeadline(c.nextHB)
		}
		m, err := c.nc.Read(c.buf[c.w:])
		c.w += m
		if c.hb > 0 && m == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			if _, err := c.nc.Write(wire.AppendHeartbeatFrame(c.out[:0])); err != nil {
				return wire.Frame{}, err
			}
			c.nextHB = time.Now().Add(c.hb)
			continue
		}
		if m == 0 && err != nil {
			return wire.Frame{}, err
		}
	}
}

// send writes one method frame on channel.
func (c *sinkConn) send(channel uint16, m wire.Method) error {
	var err error
	c.out, err = wire.AppendMethodFrame(c.out[:0], channel, m)
	if err != nil {
		return err
	}
	_, err = c.nc.Write(c.out)
	return err
}

// expect reads the next frame and decodes it as the method id.
func (c *sinkConn) expect(id wire.MethodID) (wire.Method, error) {
	f, err := c.readFrame()
	if err != nil {
		return nil, fmt.Errorf("waiting for %s: %w", id, err)
	}
	if f.Type != wire.FrameMethod {
		return nil, fmt.Errorf("waiting for %s: got a %s frame", id, f.Type)
	}
	m, err := wire.DecodeMethod(f.Payload)
	if err != nil {
		return nil, err
	}
	if m.ID() != id {
		return nil, fmt.Errorf("waiting for %s: got %s", id, m.ID())
	}
	return m, nil
}

// publishID is basic.publish's class and method ids as they start a method
// frame's payload.
var publishID = func() [4]byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(wire.MethodBasicPublish))
	return b
}()

func (s *sinkServer) handle(nc net.Conn) error {
	hb := sinkHeartbeat()
	bufSize := sinkReadBuffer
	if hb > 0 {
		bufSize = 4 << 10 // many idle connections
	}
	c := &sinkConn{nc: nc, buf: make([]byte, bufSize)}
	hdr := make([]byte, len(wire.ProtocolHeader))
	if _, err := io.ReadFull(nc, hdr); err != nil {
		return fmt.Errorf("protocol header: %w", err)
	}
	if string(hdr) != wire.ProtocolHeader {
		nc.Write([]byte(wire.ProtocolHeader))
		return fmt.Errorf("bad protocol header %q", hdr)
	}
	start := &wire.ConnectionStart{
		VersionMajor: 0, VersionMinor: 9,
		ServerProperties: wire.Table{
			"product": "pika-bench-sink",
			"capabilities": wire.Table{
				"publisher_confirms":           true,
				"basic.nack":                   true,
				"consumer_cancel_notify":       true,
				"connection.blocked":           true,
				"authentication_failure_close": true,
			},
		},
		Mechanisms: "PLAIN", Locales: "en_US",
	}
	if err := c.send(0, start); err != nil {
		return err
	}
	if _, err := c.expect(wire.MethodConnectionStartOk); err != nil {
		return err
	}
	if err := c.send(0, &wire.ConnectionTune{ChannelMax: 2047, FrameMax: wire.DefaultMaxFrameSize, Heartbeat: hb}); err != nil {
		return err
	}
	if _, err := c.expect(wire.MethodConnectionTuneOk); err != nil {
		return err
	}
	if _, err := c.expect(wire.MethodConnectionOpen); err != nil {
		return err
	}
	if err := c.send(0, &wire.ConnectionOpenOk{}); err != nil {
		return err
	}
	if hb > 0 {
		// The sink's heartbeats go out every half interval, like a
		// client's: the client hears from it well within two intervals.
		c.hb = time.Duration(hb) * time.Second / 2
		c.nextHB = time.Now().Add(c.hb)
	}

	var count int64
	reported := false
	for {
		f, err := c.readFrame()
		if err != nil {
			return err
		}
		if f.Type != wire.FrameMethod {
			continue // content headers, bodies, heartbeats
		}
		if len(f.Payload) >= 4 && [4]byte(f.Payload[:4]) == publishID {
			count++
			if !reported {
				if t := s.target.Load(); t > 0 && count >= t {
					reported = true
					s.println("reached " + strconv.FormatInt(count, 10))
				}
			}
			continue
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			return err
		}
		var reply wire.Method
		switch m := m.(type) {
		case *wire.ChannelOpen:
			reply = &wire.ChannelOpenOk{}
		case *wire.ChannelClose:
			reply = &wire.ChannelCloseOk{}
		case *wire.QueueDeclare:
			if !m.NoWait {
				reply = &wire.QueueDeclareOk{Queue: m.Queue}
			}
		case *wire.ConfirmSelect:
			if !m.NoWait {
				reply = &wire.ConfirmSelectOk{}
			}
		case *wire.BasicQos:
			reply = &wire.BasicQosOk{}
		case *wire.ConnectionClose:
			if err := c.send(0, &wire.ConnectionCloseOk{}); err != nil {
				return err
			}
			return nil
		}
		if reply != nil {
			if err := c.send(f.Channel, reply); err != nil {
				return err
			}
		}
	}
}

// sinkProc is a running sink child process. Its methods are not safe for
// concurrent use.
type sinkProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	lines chan string // the child's stdout lines after "addr"
}

// startSink starts the sink as a child process: this executable again, with
// sinkEnv set.
func startSink() (*sinkProc, error) { return startSinkEnv() }

// startSinkEnv is startSink with extra environment entries for the child.
func startSinkEnv(env ...string) (*sinkProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("sink: finding this executable: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), sinkEnv+"=1"), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sink: starting child: %w", err)
	}
	p := &sinkProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	select {
	case line, ok := <-p.lines:
		if addr, found := strings.CutPrefix(line, "addr "); ok && found {
			p.addr = addr
			return p, nil
		}
		p.stop()
		return nil, fmt.Errorf("sink: child said %q instead of its address", line)
	case <-time.After(10 * time.Second):
		p.stop()
		return nil, errors.New("sink: child did not report its address within 10s")
	}
}

// expect tells the sink the publish count to report next and waits for its
// acknowledgement.
func (p *sinkProc) expect(n int) error {
	if _, err := fmt.Fprintf(p.stdin, "expect %d\n", n); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	line, err := p.next(10 * time.Second)
	if err != nil {
		return err
	}
	if line != "ok" {
		return fmt.Errorf("sink: child answered %q to expect", line)
	}
	return nil
}

// next returns the child's next stdout line.
func (p *sinkProc) next(timeout time.Duration) (string, error) {
	select {
	case line, ok := <-p.lines:
		if !ok {
			return "", errors.New("sink: child exited")
		}
		return line, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("sink: no word from the child within %s", timeout)
	}
}

// waitReached waits for the child's "reached" line.
func (p *sinkProc) waitReached(timeout time.Duration) error {
	line, err := p.next(timeout)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "reached ") {
		return fmt.Errorf("sink: child said %q, want reached", line)
	}
	return nil
}

// stop ends the child: closing its stdin makes it exit; it is killed if it
// has not within five seconds.
func (p *sinkProc) stop() {
	p.stdin.Close()
	done := make(chan struct{})
	go func() {
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}
