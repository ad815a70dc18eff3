package memconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// wait bounds every wait of these tests for something that must happen;
// generous, for a loaded machine.
const wait = 20 * time.Second

// result is the outcome of a Read or Write run on a goroutine.
type result struct {
	n   int
	err error
}

// goCall runs a Read or Write on a goroutine.
func goCall(call func([]byte) (int, error), p []byte) chan result {
	ch := make(chan result, 1)
	go func() {
		n, err := call(p)
		ch <- result{n, err}
	}()
	return ch
}

func goRead(c net.Conn, p []byte) chan result  { return goCall(c.Read, p) }
func goWrite(c net.Conn, p []byte) chan result { return goCall(c.Write, p) }

func await(t *testing.T, ch chan result, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(wait):
		t.Fatalf("%s did not return within %v", what, wait)
		return result{}
	}
}

// pending checks that a call has not returned yet: it cannot prove that
// it never will, only that it waits while nothing lets it go on.
func pending(t *testing.T, ch chan result, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned (%d, %v), want it to wait", what, r.n, r.err)
	case <-time.After(20 * time.Millisecond):
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestRoundTrip(t *testing.T) {
	a, b := Pipe("client", "broker")
	defer a.Close()
	defer b.Close()
	if a.LocalAddr().String() != "client" || a.RemoteAddr().String() != "broker" ||
		b.LocalAddr().String() != "broker" || b.RemoteAddr().String() != "client" || a.LocalAddr().Network() != "memconn" {
		t.Errorf("addresses: a %v->%v, b %v->%v", a.LocalAddr(), a.RemoteAddr(), b.LocalAddr(), b.RemoteAddr())
	}
	// Both directions at once, each write returning before any read.
	for _, w := range []struct {
		from, to net.Conn
		msg      string
	}{{a, b, "hello broker"}, {b, a, "hello client"}} {
		if n, err := w.from.Write([]byte(w.msg)); n != len(w.msg) || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	for _, w := range []struct {
		c    net.Conn
		want string
	}{{b, "hello broker"}, {a, "hello client"}} {
		got := make([]byte, len(w.want))
		if _, err := io.ReadFull(w.c, got); err != nil || string(got) != w.want {
			t.Fatalf("read %q, %v; want %q", got, err, w.want)
		}
	}
	// A short buffer takes what fits; the rest stays for the next read.
	a.Write([]byte("abcdef"))
	p := make([]byte, 4)
	if n, err := b.Read(p); n != 4 || err != nil || string(p) != "abcd" {
		t.Fatalf("read %q (%d, %v)", p[:n], n, err)
	}
	if n, err := b.Read(p); n != 2 || err != nil || string(p[:n]) != "ef" {
		t.Fatalf("read %q (%d, %v)", p[:n], n, err)
	}
	// Zero-length calls return at once.
	if n, err := b.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if n, err := a.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
}

// TestReadWaits: a read waits for bytes, and a write wakes it.
func TestReadWaits(t *testing.T) {
	a, b := Pipe("a", "b")
	defer a.Close()
	defer b.Close()
	p := make([]byte, 8)
	r := goRead(b, p)
	pending(t, r, "read from an empty pipe")
	a.Write([]byte("x"))
	if got := await(t, r, "read"); got.n != 1 || got.err != nil || p[0] != 'x' {
		t.Fatalf("read: %+v %q", got, p[:got.n])
	}
}

// TestWriteBuffers: writes return without a reader until the buffer is
// full; then a write waits for the reader, which lets it finish, and the
// bytes arrive in order.
func TestWriteBuffers(t *testing.T) {
	a, b := PipeSize("a", "b", 10)
	defer a.Close()
	defer b.Close()
	if n, err := a.Write([]byte("0123456")); n != 7 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	w := goWrite(a, []byte("789abcdef"))
	pending(t, w, "write past the buffer")
	got := make([]byte, 16)
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != "0123456789abcdef" {
		t.Fatalf("read %q", got)
	}
	if r := await(t, w, "write"); r.n != 9 || r.err != nil {
		t.Fatalf("write: %+v", r)
	}
}

// TestCloseDelivers: what one end wrote before Close is read by the other,
// then io.EOF; the closed end's own calls fail with net.ErrClosed; the
// first write to it is lost, as on TCP, and later ones fail with
// ErrPeerClosed.
func TestCloseDelivers(t *testing.T) {
	a, b := Pipe("a", "b")
	defer b.Close()
	a.Write([]byte("last words"))
	a.Close()
	a.Close() // idempotent
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read after the peer's close: %q, %v", got, err)
	}
	if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read again: %d, %v; want io.EOF", n, err)
	}
	if n, err := b.Write([]byte("anyone?")); n != 7 || err != nil {
		t.Fatalf("first write to a closed peer: %d, %v; want it accepted (and lost)", n, err)
	}
	for range 2 {
		if _, err := b.Write([]byte("anyone?")); !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("write to a closed peer: %v, want ErrPeerClosed", err)
		}
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on the closed end: %v, want net.ErrClosed", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on the closed end: %v, want net.ErrClosed", err)
	}
}

// TestCloseWakes: Close ends calls already waiting, on both ends.
func TestCloseWakes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write bool // a Write of 8 bytes into a 4-byte pipe, else a Read
		own   bool // the end of the call closes, else the other end
		n     int
		want  error
	}{
		{"own read", false, true, 0, net.ErrClosed},
		{"peer read", false, false, 0, io.EOF},
		{"own write", true, true, 4, net.ErrClosed},
		{"peer write", true, false, 4, ErrPeerClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := PipeSize("a", "b", 4)
			defer a.Close()
			defer b.Close()
			call := goRead(a, make([]byte, 1))
			if tc.write {
				call = goWrite(a, []byte("too long"))
			}
			pending(t, call, tc.name)
			if tc.own {
				a.Close()
			} else {
				b.Close()
			}
			if got := await(t, call, tc.name); got.n != tc.n || !errors.Is(got.err, tc.want) {
				t.Fatalf("%s: (%d, %v), want (%d, %v)", tc.name, got.n, got.err, tc.n, tc.want)
			}
		})
	}
}

// TestHalfClose: after CloseWrite the peer reads the rest and io.EOF while
// the half-closed end still reads; after CloseRead the peer's writes fail.
func TestHalfClose(t *testing.T) {
	a, b := Pipe("a", "b")
	defer a.Close()
	defer b.Close()
	a.Write([]byte("request"))
	a.(*Conn).CloseWrite()
	if _, err := a.Write([]byte("more")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after CloseWrite: %v, want net.ErrClosed", err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "request" {
		t.Fatalf("read: %q, %v", got, err)
	}
	b.Write([]byte("response"))
	b.Close()
	got, err = io.ReadAll(a)
	if err != nil || string(got) != "response" {
		t.Fatalf("read on the half-closed end: %q, %v", got, err)
	}

	c, d := Pipe("c", "d")
	defer c.Close()
	defer d.Close()
	d.Write([]byte("dropped"))
	c.(*Conn).CloseRead()
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after CloseRead: %d, %v; want io.EOF", n, err)
	}
	d.Write([]byte("lost"))
	if _, err := d.Write([]byte("x")); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("write to a peer that closed reading: %v, want ErrPeerClosed", err)
	}
	// The other direction still works.
	c.Write([]byte("still"))
	p := make([]byte, 5)
	if _, err := io.ReadFull(d, p); err != nil || string(p) != "still" {
		t.Fatalf("read: %q, %v", p, err)
	}
}

// TestDeadlines: a passed deadline fails calls at once (even with bytes
// waiting, as a socket does) with an error whose Timeout is true; a
// deadline interrupts a waiting call; moving or clearing it lets calls go
// on; read and write deadlines are separate.
func TestDeadlines(t *testing.T) {
	a, b := PipeSize("a", "b", 4)
	defer a.Close()
	defer b.Close()
	b.Write([]byte("data"))
	a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := a.Read(make([]byte, 4)); !isTimeout(err) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	if _, err := a.Write([]byte("ok")); err != nil {
		t.Fatalf("write with only a read deadline passed: %v", err)
	}
	a.SetReadDeadline(time.Time{})
	p := make([]byte, 4)
	if _, err := io.ReadFull(a, p); err != nil || string(p) != "data" {
		t.Fatalf("read once the deadline is cleared: %q, %v", p, err)
	}

	// A deadline set from another goroutine interrupts a waiting read
	// (pikatest's Stop ends a connection's reader so).
	r := goRead(a, p)
	pending(t, r, "read")
	a.SetReadDeadline(time.Now())
	if got := await(t, r, "read"); !isTimeout(got.err) {
		t.Fatalf("read: %v, want a timeout", got.err)
	}

	// A future deadline fires while the read waits.
	a.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if got := await(t, goRead(a, p), "read"); !isTimeout(got.err) {
		t.Fatalf("read: %v, want a timeout", got.err)
	}

	// A deadline moved away before it fires does not fire.
	a.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	a.SetReadDeadline(time.Now().Add(time.Hour))
	r = goRead(a, p)
	time.Sleep(60 * time.Millisecond) // past the first deadline
	pending(t, r, "read after the deadline moved")
	b.Write([]byte("z"))
	if got := await(t, r, "read"); got.err != nil || got.n != 1 {
		t.Fatalf("read: %+v", got)
	}

	// A write waiting for room times out with what went in.
	if _, err := a.Write([]byte("ok")); err != nil { // the buffer now holds "okok"
		t.Fatalf("write: %v", err)
	}
	a.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
	if got := await(t, goWrite(a, []byte("more")), "write"); got.n != 0 || !isTimeout(got.err) {
		t.Fatalf("write into a full pipe: %+v, want 0 bytes and a timeout", got)
	}
	a.SetDeadline(time.Time{})
	if got := goWrite(a, []byte("more")); true {
		io.ReadFull(b, make([]byte, 4))
		if r := await(t, got, "write"); r.n != 4 || r.err != nil {
			t.Fatalf("write once the deadline is cleared: %+v", r)
		}
	}
}

// TestConcurrent: many writers at once, each write arriving whole (not
// interleaved with another) and nothing lost; then many readers at once,
// together reading every byte. Run with -race.
func TestConcurrent(t *testing.T) {
	a, b := PipeSize("a", "b", 64)
	defer a.Close()
	defer b.Close()
	const writers, each = 8, 200
	msg := func(w int) []byte { return bytes.Repeat([]byte{byte('A' + w)}, 16) }
	write := func() {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if _, err := a.Write(msg(w)); err != nil {
						t.Errorf("write: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	go write()
	all := make([]byte, writers*each*16)
	if _, err := io.ReadFull(b, all); err != nil {
		t.Fatalf("read: %v", err)
	}
	counts := map[byte]int{}
	for i := 0; i < len(all); i += 16 {
		chunk := all[i : i+16]
		if !bytes.Equal(chunk, bytes.Repeat(chunk[:1], 16)) {
			t.Fatalf("chunk %d mixes writes: %q", i/16, chunk)
		}
		counts[chunk[0]]++
	}
	for w := range writers {
		if counts[byte('A'+w)] != each {
			t.Errorf("writer %d: %d messages arrived, want %d", w, counts[byte('A'+w)], each)
		}
	}

	go func() {
		write()
		a.(*Conn).CloseWrite()
	}()
	var total sync.Map
	var rg sync.WaitGroup
	for r := range 3 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			n, err := io.Copy(io.Discard, b)
			if err != nil {
				t.Errorf("read: %v", err)
			}
			total.Store(r, n)
		}()
	}
	rg.Wait()
	var sum int64
	total.Range(func(_, v any) bool { sum += v.(int64); return true })
	if sum != writers*each*16 {
		t.Fatalf("the readers read %d bytes together, want %d", sum, writers*each*16)
	}
}
