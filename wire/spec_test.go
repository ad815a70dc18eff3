package wire

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file checks methods_gen.go against the spec files, read here with
// plain encoding/json and encoding/xml rather than through the generator, and
// round-trips every method and the content properties.

const (
	specJSONPath = "../spec/amqp-rabbitmq-0.9.1.json"
	specXMLPath  = "../spec/amqp0-9-1.extended.xml"
)

type specJSON struct {
	Domains   [][2]string `json:"domains"`
	Constants []struct {
		Name  string `json:"name"`
		Value int    `json:"value"`
		Class string `json:"class"`
	} `json:"constants"`
	Classes []struct {
		Name    string `json:"name"`
		ID      int    `json:"id"`
		Methods []struct {
			Name        string         `json:"name"`
			ID          int            `json:"id"`
			Synchronous bool           `json:"synchronous"`
			Content     bool           `json:"content"`
			Arguments   []specJSONArgs `json:"arguments"`
		} `json:"methods"`
		Properties []specJSONArgs `json:"properties"`
	} `json:"classes"`
}

type specJSONArgs struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Domain string `json:"domain"`
}

type specXML struct {
	Classes []struct {
		Name    string `xml:"name,attr"`
		Methods []struct {
			Name    string `xml:"name,attr"`
			Chassis []struct {
				Name string `xml:"name,attr"`
			} `xml:"chassis"`
			Responses []struct {
				Name string `xml:"name,attr"`
			} `xml:"response"`
		} `xml:"method"`
	} `xml:"class"`
}

// specMethod is one method as the spec files describe it.
type specMethod struct {
	class, name string
	id          MethodID
	sync        bool
	content     bool
	args        []specJSONArgs // with Type resolved from Domain
	inXML       bool
	responses   []string // "class.method", from the XML
	sentBy      Sender   // from the XML chassis
}

func (m *specMethod) fullName() string { return m.class + "." + m.name }

// specErrata are the facts methods_gen.go takes from internal/specgen's
// errata rather than from the XML. Each must differ from what the XML says.
var specErrata = map[string]struct {
	responses []string
	sentBy    Sender
}{
	"access.request":              {[]string{"access.request-ok"}, SentByClient},
	"access.request-ok":           {nil, SentByServer},
	"basic.recover":               {[]string{"basic.recover-ok"}, 0},
	"connection.update-secret":    {nil, SentByClient},
	"connection.update-secret-ok": {nil, SentByServer},
	"connection.blocked":          {nil, SentByServer},
	"connection.unblocked":        {nil, SentByServer},
}

func loadSpec(t *testing.T) (*specJSON, []*specMethod) {
	t.Helper()
	jb, err := os.ReadFile(specJSONPath)
	if err != nil {
		t.Fatal(err)
	}
	xb, err := os.ReadFile(specXMLPath)
	if err != nil {
		t.Fatal(err)
	}
	var js specJSON
	if err := json.Unmarshal(jb, &js); err != nil {
		t.Fatal(err)
	}
	var xs specXML
	if err := xml.Unmarshal(xb, &xs); err != nil {
		t.Fatal(err)
	}
	domains := map[string]string{}
	for _, d := range js.Domains {
		domains[d[0]] = d[1]
	}
	var ms []*specMethod
	for _, c := range js.Classes {
		for _, m := range c.Methods {
			sm := &specMethod{class: c.Name, name: m.Name, id: MethodID(c.ID<<16 | m.ID),
				sync: m.Synchronous, content: m.Content}
			for _, a := range m.Arguments {
				if a.Type == "" {
					a.Type = domains[a.Domain]
				}
				sm.args = append(sm.args, a)
			}
			for _, xc := range xs.Classes {
				for _, xm := range xc.Methods {
					if xc.Name != c.Name || xm.Name != m.Name {
						continue
					}
					sm.inXML = true
					for _, r := range xm.Responses {
						sm.responses = append(sm.responses, c.Name+"."+r.Name)
					}
					for _, ch := range xm.Chassis {
						switch ch.Name {
						case "server":
							sm.sentBy |= SentByClient
						case "client":
							sm.sentBy |= SentByServer
						}
					}
				}
			}
			ms = append(ms, sm)
		}
	}
	return &js, ms
}

var specGoTypes = map[string]reflect.Type{
	"octet": reflect.TypeFor[uint8](), "short": reflect.TypeFor[uint16](),
	"long": reflect.TypeFor[uint32](), "longlong": reflect.TypeFor[uint64](),
	"shortstr": reflect.TypeFor[string](), "longstr": reflect.TypeFor[string](),
	"bit": reflect.TypeFor[bool](), "table": reflect.TypeFor[Table](),
	"timestamp": reflect.TypeFor[time.Time](),
}

// specWireSize is the encoded size of a zero value of each type.
var specWireSize = map[string]int{
	"octet": 1, "short": 2, "long": 4, "longlong": 8, "shortstr": 1, "longstr": 4,
	"table": 4, "timestamp": 8,
}

// bitPositions returns, for each argument, the byte offset of its packed
// octet in a zero encoding and its bit number, or -1 for non-bit arguments;
// and the total zero-encoding size.
func bitPositions(args []specJSONArgs) (offsets, bits []int, size int) {
	run := 0
	for i, a := range args {
		if a.Type != "bit" {
			offsets, bits = append(offsets, -1), append(bits, -1)
			size += specWireSize[a.Type]
			run = 0
			continue
		}
		if i == 0 || args[i-1].Type != "bit" || run == 8 {
			size++
			run = 0
		}
		offsets, bits = append(offsets, size-1), append(bits, run)
		run++
	}
	return offsets, bits, size
}

// normName makes a spec name and a Go field name comparable.
func normName(s string) string { return strings.ToLower(strings.ReplaceAll(s, "-", "")) }

func TestSpecMethods(t *testing.T) {
	_, ms := loadSpec(t)
	if len(ms) != 66 {
		t.Fatalf("spec has %d methods, want 66", len(ms))
	}
	if len(methodTable) != len(ms) {
		t.Errorf("methodTable has %d methods, spec %d", len(methodTable), len(ms))
	}
	byName := map[string]*specMethod{}
	for _, m := range ms {
		byName[m.fullName()] = m
	}
	for _, m := range ms {
		t.Run(m.fullName(), func(t *testing.T) {
			id := m.id
			if !id.Known() || id.Name() != m.fullName() || id.String() != m.fullName() {
				t.Errorf("Known=%v Name=%q String=%q", id.Known(), id.Name(), id.String())
			}
			if id.Class().String() != m.class || int(id.Index()) != int(id&0xFFFF) {
				t.Errorf("Class=%v Index=%d", id.Class(), id.Index())
			}
			if id.HasContent() != m.content {
				t.Errorf("HasContent=%v, JSON content=%v", id.HasContent(), m.content)
			}
			if id.Synchronous() != m.sync {
				t.Errorf("Synchronous=%v, JSON synchronous=%v", id.Synchronous(), m.sync)
			}

			wantResp, wantSender := m.responses, m.sentBy
			if e, ok := specErrata[m.fullName()]; ok {
				changed := false
				if e.responses != nil {
					changed = changed || !slices.Equal(e.responses, wantResp)
					wantResp = e.responses
				}
				if e.sentBy != 0 {
					changed = changed || e.sentBy != wantSender
					wantSender = e.sentBy
				}
				if !changed {
					t.Errorf("erratum no longer differs from the XML")
				}
			} else if !m.inXML {
				t.Fatalf("not in the XML and no erratum")
			}
			var gotResp []string
			for _, r := range id.Responses() {
				gotResp = append(gotResp, r.Name())
				if byName[r.Name()] == nil {
					t.Errorf("response %v is not a spec method", r)
				}
			}
			if !slices.Equal(gotResp, wantResp) {
				t.Errorf("Responses = %v, want %v", gotResp, wantResp)
			}
			if id.Synchronous() != (len(wantResp) > 0) {
				t.Errorf("Synchronous=%v with responses %v", id.Synchronous(), wantResp)
			}
			if id.SentBy() != wantSender {
				t.Errorf("SentBy = %v, want %v", id.SentBy(), wantSender)
			}

			v := id.New()
			if v == nil || v.ID() != id {
				t.Fatalf("New() = %#v", v)
			}
			rt := reflect.TypeOf(v).Elem()
			if rt.Size() > 0 && v == id.New() { // zero-size values may share an address
				t.Errorf("New returns a shared value")
			}
			if rt.NumField() != len(m.args) {
				t.Fatalf("%s has %d fields, spec %d arguments", rt.Name(), rt.NumField(), len(m.args))
			}
			for i, a := range m.args {
				f := rt.Field(i)
				if normName(f.Name) != normName(a.Name) || f.Type != specGoTypes[a.Type] {
					t.Errorf("field %d: %s %v, spec %s %s", i, f.Name, f.Type, a.Name, a.Type)
				}
			}
			_, _, size := bitPositions(m.args)
			b, err := v.AppendTo(nil)
			if err != nil || len(b) != size {
				t.Errorf("zero value encodes to %d bytes (%v), spec says %d", len(b), err, size)
			}
		})
	}
}

func TestSpecClassesAndConstants(t *testing.T) {
	js, _ := loadSpec(t)
	for _, c := range js.Classes {
		if got := ClassID(c.ID).String(); got != c.Name {
			t.Errorf("ClassID(%d) = %q, want %q", c.ID, got, c.Name)
		}
	}
	named := map[ClassID]string{ClassConnection: "connection", ClassChannel: "channel",
		ClassAccess: "access", ClassExchange: "exchange", ClassQueue: "queue", ClassBasic: "basic",
		ClassTx: "tx", ClassConfirm: "confirm"}
	for c, n := range named {
		if c.String() != n {
			t.Errorf("%d = %q, want %q", c, c.String(), n)
		}
	}
	if s := ClassID(7).String(); s != "class(7)" {
		t.Errorf("ClassID(7) = %q", s)
	}

	frames := map[string]FrameType{"FRAME-METHOD": FrameMethod, "FRAME-HEADER": FrameHeader,
		"FRAME-BODY": FrameBody, "FRAME-HEARTBEAT": FrameHeartbeat}
	replies := 0
	for _, c := range js.Constants {
		switch {
		case c.Name == "FRAME-MIN-SIZE":
			if FrameMinSize != c.Value {
				t.Errorf("FrameMinSize = %d, want %d", FrameMinSize, c.Value)
			}
		case c.Name == "FRAME-END":
			if FrameEnd != c.Value {
				t.Errorf("FrameEnd = %d, want %d", FrameEnd, c.Value)
			}
		case frames[c.Name] != 0:
			ft := frames[c.Name]
			if int(ft) != c.Value || ft.String() != strings.ToLower(strings.TrimPrefix(c.Name, "FRAME-")) {
				t.Errorf("%s: %d %q, want %d", c.Name, ft, ft.String(), c.Value)
			}
			delete(frames, c.Name)
		default:
			replies++
			rc := ReplyCode(c.Value)
			if rc.String() != strings.ReplaceAll(c.Name, "-", "_") || !rc.Known() ||
				rc.IsSoft() != (c.Class == "soft-error") || rc.IsHard() != (c.Class == "hard-error") {
				t.Errorf("%s (%d, %s): String=%q Known=%v IsSoft=%v IsHard=%v",
					c.Name, c.Value, c.Class, rc, rc.Known(), rc.IsSoft(), rc.IsHard())
			}
		}
	}
	if len(frames) != 0 || replies != 19 {
		t.Errorf("frame types not in the JSON: %v; %d reply codes, want 19", frames, replies)
	}
	if s := FrameType(9).String(); s != "frame-type(9)" {
		t.Errorf("FrameType(9) = %q", s)
	}
	for _, c := range []ReplyCode{0, 201, 999} {
		if c.Known() || c.IsSoft() || c.IsHard() || c.String() != "reply-code("+strconv.Itoa(int(c))+")" {
			t.Errorf("ReplyCode(%d): Known=%v String=%q", c, c.Known(), c)
		}
	}
	codes := map[ReplyCode]uint16{ReplySuccess: 200, ReplyContentTooLarge: 311, ReplyNoRoute: 312,
		ReplyNoConsumers: 313, ReplyConnectionForced: 320, ReplyInvalidPath: 402, ReplyAccessRefused: 403,
		ReplyNotFound: 404, ReplyResourceLocked: 405, ReplyPreconditionFailed: 406, ReplyFrameError: 501,
		ReplySyntaxError: 502, ReplyCommandInvalid: 503, ReplyChannelError: 504, ReplyUnexpectedFrame: 505,
		ReplyResourceError: 506, ReplyNotAllowed: 530, ReplyNotImplemented: 540, ReplyInternalError: 541}
	for c, v := range codes {
		if uint16(c) != v {
			t.Errorf("%v = %d, want %d", c, c, v)
		}
	}
	if ReplySuccess.IsSoft() || ReplySuccess.IsHard() || ReplyNotFound.String() != "NOT_FOUND" {
		t.Errorf("ReplySuccess soft/hard or NOT_FOUND name wrong")
	}
}

func TestSpecMethodIDExamples(t *testing.T) {
	if MethodExchangeUnbindOk != 40<<16|51 || MethodBasicPublish != 60<<16|40 {
		t.Errorf("MethodExchangeUnbindOk=%#x MethodBasicPublish=%#x", uint32(MethodExchangeUnbindOk), uint32(MethodBasicPublish))
	}
	if got := MethodBasicGet.Responses(); !slices.Equal(got, []MethodID{MethodBasicGetOk, MethodBasicGetEmpty}) {
		t.Errorf("basic.get responses %v", got)
	}
	if got := MethodChannelClose.Responses(); !slices.Equal(got, []MethodID{MethodChannelCloseOk}) {
		t.Errorf("channel.close responses %v", got)
	}
	both := SentByClient | SentByServer
	for _, id := range []MethodID{MethodBasicAck, MethodBasicNack, MethodBasicCancel, MethodChannelClose, MethodChannelFlow} {
		if id.SentBy() != both {
			t.Errorf("%v sent by %v, want both", id, id.SentBy())
		}
	}
	if MethodBasicPublish.SentBy() != SentByClient || MethodBasicDeliver.SentBy() != SentByServer {
		t.Errorf("publish/deliver senders wrong")
	}
	if s := both.String(); s != "client|server" {
		t.Errorf("Sender string %q", s)
	}
	unknown := MethodID(255<<16 | 1)
	if unknown.Known() || unknown.Name() != "" || unknown.String() != "method(255,1)" ||
		unknown.New() != nil || unknown.Responses() != nil || unknown.SentBy() != 0 ||
		unknown.Synchronous() || unknown.HasContent() {
		t.Errorf("unknown method: %v %q %v", unknown.Known(), unknown.String(), unknown.New())
	}
	if (MethodID(60<<16 | 41)).Known() {
		t.Errorf("60,41 known")
	}
}

// specFill sets every field of the struct v points to a distinctive
// non-zero value derived from seed and the field's position. Bools are set
// from the bits of boolMask.
func specFill(v reflect.Value, seed int, boolMask uint) {
	v = v.Elem()
	nb := 0
	for i := range v.NumField() {
		f := v.Field(i)
		k := seed*31 + i + 1
		switch f.Interface().(type) {
		case uint8:
			f.SetUint(uint64(0x40 + k%64))
		case uint16:
			f.SetUint(uint64(0x1100 + k))
		case uint32:
			f.SetUint(uint64(0x22334400 + k))
		case uint64:
			f.SetUint(uint64(0x5566778899000000 + k))
		case string:
			s := v.Type().Field(i).Name + "-" + strconv.Itoa(k)
			f.SetString(s)
		case bool:
			f.SetBool(boolMask&(1<<nb) != 0)
			nb++
		case Table:
			f.Set(reflect.ValueOf(Table{"name": v.Type().Field(i).Name, "n": int32(k), "nested": Table{"x": true}}))
		case time.Time:
			f.Set(reflect.ValueOf(time.Unix(int64(1700000000+k), 0).UTC()))
		default:
			panic("specFill: field type " + f.Type().String())
		}
	}
}

// specLongstrs makes every longstr argument longer than 255 bytes, which a
// shortstr codec would refuse.
func specLongstrs(v reflect.Value, args []specJSONArgs) {
	for i, a := range args {
		if a.Type == "longstr" {
			f := v.Elem().Field(i)
			f.SetString(f.String() + strings.Repeat("L", 300))
		}
	}
}

func TestMethodRoundTrip(t *testing.T) {
	_, ms := loadSpec(t)
	for _, m := range ms {
		t.Run(m.fullName(), func(t *testing.T) {
			nbits := 0
			for _, a := range m.args {
				if a.Type == "bit" {
					nbits++
				}
			}
			masks := []uint{0, 1<<nbits - 1, 0x55, 0xAA}
			for j := range nbits {
				masks = append(masks, 1<<j)
			}
			for _, mask := range masks {
				in := m.id.New()
				specFill(reflect.ValueOf(in), int(mask), mask)
				specLongstrs(reflect.ValueOf(in), m.args)
				enc, err := in.AppendTo([]byte("prefix"))
				if err != nil || !bytes.HasPrefix(enc, []byte("prefix")) {
					t.Fatalf("AppendTo: %v", err)
				}
				enc = enc[len("prefix"):]
				out := m.id.New()
				if err := out.Decode(enc); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				for i := range enc {
					enc[i] = 0xFF // the decoded value must not alias its input
				}
				if !reflect.DeepEqual(in, out) {
					t.Fatalf("mask %#x: round trip\n got %+v\nwant %+v", mask, out, in)
				}
			}
			// A zero value round-trips too.
			in := m.id.New()
			enc, err := in.AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			out := m.id.New()
			specFill(reflect.ValueOf(out), 3, 0xFF)
			if err := out.Decode(enc); err != nil || !reflect.DeepEqual(in, out) {
				t.Fatalf("zero value: %v\n got %+v", err, out)
			}
		})
	}
}

// TestMethodBitPositions checks, for every bit argument of every method,
// which octet and which bit it occupies, as the spec's packing rule says:
// consecutive bits share an octet, first bit in the least significant
// position.
func TestMethodBitPositions(t *testing.T) {
	_, ms := loadSpec(t)
	for _, m := range ms {
		offsets, bits, _ := bitPositions(m.args)
		zero, _ := m.id.New().AppendTo(nil)
		for i, a := range m.args {
			if a.Type != "bit" {
				continue
			}
			v := m.id.New()
			reflect.ValueOf(v).Elem().Field(i).SetBool(true)
			enc, err := v.AppendTo(nil)
			if err != nil || len(enc) != len(zero) {
				t.Fatalf("%s %s: %v", m.fullName(), a.Name, err)
			}
			want := slices.Clone(zero)
			want[offsets[i]] = 1 << bits[i]
			if !bytes.Equal(enc, want) {
				t.Errorf("%s %s: % x, want % x", m.fullName(), a.Name, enc, want)
			}
		}
	}
}

func TestMethodGolden(t *testing.T) {
	tests := []struct {
		name string
		m    Method
		want []byte
	}{
		{"queue.declare durable", &QueueDeclare{Queue: "q", Durable: true},
			[]byte{0, 0, 1, 'q', 0x02, 0, 0, 0, 0}},
		{"queue.declare passive exclusive no-wait", &QueueDeclare{Ticket: 0x0102, Queue: "q", Passive: true, Exclusive: true, NoWait: true},
			[]byte{1, 2, 1, 'q', 0x15, 0, 0, 0, 0}},
		{"queue.declare durable auto-delete", &QueueDeclare{Durable: true, AutoDelete: true},
			[]byte{0, 0, 0, 0x0A, 0, 0, 0, 0}},
		{"queue.declare all bits", &QueueDeclare{Passive: true, Durable: true, Exclusive: true, AutoDelete: true, NoWait: true},
			[]byte{0, 0, 0, 0x1F, 0, 0, 0, 0}},
		{"exchange.declare internal", &ExchangeDeclare{Exchange: "x", Type: "topic", Internal: true},
			[]byte{0, 0, 1, 'x', 5, 't', 'o', 'p', 'i', 'c', 0x08, 0, 0, 0, 0}},
		{"basic.consume no-ack exclusive", &BasicConsume{Queue: "q", ConsumerTag: "c", NoAck: true, Exclusive: true},
			[]byte{0, 0, 1, 'q', 1, 'c', 0x06, 0, 0, 0, 0}},
		{"basic.publish mandatory", &BasicPublish{Exchange: "e", RoutingKey: "rk", Mandatory: true},
			[]byte{0, 0, 1, 'e', 2, 'r', 'k', 0x01}},
		{"basic.nack requeue", &BasicNack{DeliveryTag: 0x0102030405060708, Requeue: true},
			[]byte{1, 2, 3, 4, 5, 6, 7, 8, 0x02}},
		{"basic.deliver", &BasicDeliver{ConsumerTag: "ct", DeliveryTag: 9, Redelivered: true, Exchange: "", RoutingKey: "k"},
			[]byte{2, 'c', 't', 0, 0, 0, 0, 0, 0, 0, 9, 0x01, 0, 1, 'k'}},
		{"connection.tune", &ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60},
			[]byte{0x07, 0xFF, 0, 2, 0, 0, 0, 60}},
		{"connection.close", &ConnectionClose{ReplyCode: 320, ReplyText: "bye", ClassID: 60, MethodID: 40},
			[]byte{0x01, 0x40, 3, 'b', 'y', 'e', 0, 60, 0, 40}},
		{"connection.secure", &ConnectionSecure{Challenge: "ab"},
			[]byte{0, 0, 0, 2, 'a', 'b'}},
		{"tx.select", &TxSelect{}, []byte{}},
	}
	for _, tt := range tests {
		got, err := tt.m.AppendTo([]byte{})
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("%s: % x (%v), want % x", tt.name, got, err, tt.want)
		}
	}
}

func TestMethodDecodeErrors(t *testing.T) {
	_, ms := loadSpec(t)
	for _, m := range ms {
		in := m.id.New()
		specFill(reflect.ValueOf(in), 1, 0xFF)
		enc, err := in.AppendTo(nil)
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(enc) {
			err := m.id.New().Decode(enc[:n])
			var e *Error
			if !errors.Is(err, ErrTruncated) || !errors.As(err, &e) || e.Method != m.id || e.Detail == "" {
				t.Fatalf("%s: %d of %d bytes: %v", m.fullName(), n, len(enc), err)
			}
		}
		err = m.id.New().Decode(append(enc, 0))
		var e *Error
		if !errors.Is(err, ErrTrailingBytes) || !errors.As(err, &e) || e.Method != m.id || e.Offset != len(enc) {
			t.Errorf("%s with a trailing byte: %v", m.fullName(), err)
		}
		if !strings.Contains(err.Error(), m.fullName()) {
			t.Errorf("error %q does not name the method", err)
		}
	}
}

func TestMethodEncodeErrors(t *testing.T) {
	long := strings.Repeat("x", 256)
	dst := []byte("keep")
	for _, m := range []Method{
		&BasicPublish{Exchange: "ok", RoutingKey: long},
		&QueueDeclare{Queue: "q", Arguments: Table{"bad": struct{}{}}},
	} {
		got, err := m.AppendTo(dst)
		var e *Error
		if err == nil || !errors.As(err, &e) || e.Method != m.ID() || string(got) != "keep" {
			t.Errorf("%v: % x, %v", m.ID(), got, err)
		}
	}
	_, err := (&BasicPublish{RoutingKey: long}).AppendTo(nil)
	if !errors.Is(err, ErrStringTooLong) || !strings.Contains(err.Error(), "routing-key") {
		t.Errorf("long routing key: %v", err)
	}
}

func TestMethodDecodeReusesStrings(t *testing.T) {
	in := &BasicDeliver{ConsumerTag: "ctag-1", DeliveryTag: 1, Exchange: "amq.direct", RoutingKey: "work"}
	enc, err := in.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out BasicDeliver
	if err := out.Decode(enc); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := out.Decode(enc); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("decoding basic.deliver again allocates %v times", allocs)
	}
	if !reflect.DeepEqual(&out, in) {
		t.Errorf("got %+v", out)
	}
}

// specProps is a Properties value with every property set.
func specProps() Properties {
	return Properties{
		ContentType: "application/json", ContentEncoding: "gzip",
		Headers: Table{"h": "v", "n": int32(7)}, DeliveryMode: 2, Priority: 9,
		CorrelationID: "corr", ReplyTo: "amq.rabbitmq.reply-to", Expiration: "60000",
		MessageID: "mid", Timestamp: time.Unix(1700000000, 0).UTC(), Type: "t",
		UserID: "guest", AppID: "app", ClusterID: "cl",
	}
}

func decodeProps(b []byte, p *Properties) error {
	r := reader{b: b}
	p.decodeFields(&r)
	return r.done("properties")
}

func TestSpecProperties(t *testing.T) {
	js, _ := loadSpec(t)
	var props []specJSONArgs
	for _, c := range js.Classes {
		if c.Name == "basic" {
			props = c.Properties
		}
	}
	if len(props) != 14 {
		t.Fatalf("%d basic properties, want 14", len(props))
	}
	rt := reflect.TypeFor[Properties]()
	if rt.NumField() != 15 || rt.Field(14).Name != "Flags" || rt.Field(14).Type != reflect.TypeFor[PropertyFlags]() {
		t.Fatalf("Properties has %d fields; want the 14 properties and Flags last", rt.NumField())
	}
	full := specProps()
	for i, p := range props {
		f := rt.Field(i)
		if normName(f.Name) != normName(p.Name) || f.Type != specGoTypes[p.Type] {
			t.Errorf("field %d: %s %v, spec %s %s", i, f.Name, f.Type, p.Name, p.Type)
		}
		// A value with only this property set announces exactly its flag.
		var one Properties
		reflect.ValueOf(&one).Elem().Field(i).Set(reflect.ValueOf(full).Field(i))
		b, err := one.appendFields(nil)
		want := uint16(1) << (15 - i)
		if err != nil || len(b) < 2 || uint16(b[0])<<8|uint16(b[1]) != want || PropertyFlags(want).String() != p.Name {
			t.Errorf("%s alone: % x (%v), want flags %#04x named %q", p.Name, b, err, want, PropertyFlags(want).String())
		}
	}
	if s := (FlagContentType | FlagHeaders | 3).String(); s != "content-type|headers|0x3" {
		t.Errorf("flags string %q", s)
	}
}

func TestPropertiesRoundTrip(t *testing.T) {
	in := specProps()
	enc, err := in.appendFields(nil)
	if err != nil {
		t.Fatal(err)
	}
	if enc[0] != 0xFF || enc[1] != 0xFC {
		t.Errorf("flags % x, want ff fc", enc[:2])
	}
	var out Properties
	if err := decodeProps(enc, &out); err != nil {
		t.Fatal(err)
	}
	in.Flags = 0xFFFC
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("got %+v\nwant %+v", out, in)
	}

	// Present but empty properties keep their flags through a round trip,
	// and a reused value drops what the new header does not carry.
	empty := Properties{Flags: FlagContentType | FlagPriority | FlagHeaders | FlagTimestamp, AppID: "a"}
	enc, err = empty.appendFields(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0xA8, 0x48, // content-type, headers, priority; timestamp, app-id
		0,          // content-type ""
		0, 0, 0, 0, // headers: empty table
		0,                      // priority 0
		0, 0, 0, 0, 0, 0, 0, 0, // timestamp 0
		1, 'a', // app-id
	}
	if !bytes.Equal(enc, want) {
		t.Errorf("empty-present: % x, want % x", enc, want)
	}
	if err := decodeProps(enc, &out); err != nil {
		t.Fatal(err)
	}
	wantOut := Properties{Flags: 0xA848, AppID: "a", Timestamp: time.Unix(0, 0).UTC()}
	if !reflect.DeepEqual(out, wantOut) {
		t.Errorf("got %+v\nwant %+v", out, wantOut)
	}
	again, err := out.appendFields(nil)
	if err != nil || !bytes.Equal(again, enc) {
		t.Errorf("re-encoded % x (%v), want % x", again, err, enc)
	}

	// No properties at all.
	var none Properties
	if enc, err := none.appendFields(nil); err != nil || !bytes.Equal(enc, []byte{0, 0}) {
		t.Errorf("no properties: % x %v", enc, err)
	}
	// Undefined bits in Flags are not sent.
	odd := Properties{Flags: 0x0003}
	if enc, err := odd.appendFields(nil); err != nil || !bytes.Equal(enc, []byte{0, 0}) {
		t.Errorf("undefined flags: % x %v", enc, err)
	}
}

func TestPropertiesDecodeErrors(t *testing.T) {
	for _, flags := range []uint16{0x0001, 0x0002, 0x8001, 0xFFFF} {
		var p Properties
		err := decodeProps([]byte{byte(flags >> 8), byte(flags), 0, 0, 0, 0}, &p)
		if !errors.Is(err, ErrBadPropertyFlags) || !strings.Contains(err.Error(), "property flags") {
			t.Errorf("flags %#04x: %v", flags, err)
		}
	}
	in := specProps()
	enc, err := in.appendFields(nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(enc) {
		var p Properties
		if err := decodeProps(enc[:n], &p); !errors.Is(err, ErrTruncated) {
			t.Fatalf("%d of %d bytes: %v", n, len(enc), err)
		}
	}
	in.ContentType = strings.Repeat("x", 256)
	if got, err := in.appendFields([]byte("k")); !errors.Is(err, ErrStringTooLong) || string(got) != "k" {
		t.Errorf("long content type: %q %v", got, err)
	}
}

func TestPropertiesDecodeReusesStrings(t *testing.T) {
	in := Properties{ContentType: "text/plain", DeliveryMode: 2, CorrelationID: "c1", ReplyTo: "r", MessageID: "m"}
	enc, err := in.appendFields(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out Properties
	if err := decodeProps(enc, &out); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := decodeProps(enc, &out); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("decoding the same properties again allocates %v times", allocs)
	}
}

// TestGeneratedFileIsCurrent runs the generator twice and compares both
// outputs with the committed methods_gen.go.
func TestGeneratedFileIsCurrent(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the generator: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "specgen")
	build := exec.Command(goTool, "build", "-o", bin, "../internal/specgen")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building specgen: %v\n%s", err, out)
	}
	committed, err := os.ReadFile("methods_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if line1, _, _ := bytes.Cut(committed, []byte("\n")); string(line1) != "// Code generated by specgen. DO NOT EDIT." {
		t.Errorf("line 1 is %q", line1)
	}
	for i := range 2 {
		out := filepath.Join(dir, "out"+strconv.Itoa(i)+".go")
		cmd := exec.Command(bin, "-json", specJSONPath, "-xml", specXMLPath, "-out", out)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("specgen: %v\n%s", err, msg)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, committed) {
			t.Fatalf("run %d: generator output differs from methods_gen.go; run go generate ./wire", i+1)
		}
	}
}
