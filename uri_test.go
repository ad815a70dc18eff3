package pika

import (
	"crypto/tls"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// tlsWant is what a test expects of Config.TLS; nil means no TLS.
type tlsWant struct {
	serverName string
	insecure   bool
}

func TestParseURL(t *testing.T) {
	def := func(c Config) Config {
		if c.Vhost == "" {
			c.Vhost = "/"
		}
		return c
	}
	tests := []struct {
		name string
		url  string
		want Config
		tls  *tlsWant
	}{
		{"empty authority", "amqp://", def(Config{Addr: "localhost:5672"}), nil},
		{"host only", "amqp://host", def(Config{Addr: "host:5672"}), nil},
		{"host and slash", "amqp://host/", def(Config{Addr: "host:5672"}), nil},
		{"upper-case scheme", "AMQP://host", def(Config{Addr: "host:5672"}), nil},
		{"amqps default port", "amqps://host", def(Config{Addr: "host:5671"}), &tlsWant{serverName: "host"}},
		{"amqps empty host", "amqps://", def(Config{Addr: "localhost:5671"}), &tlsWant{serverName: "localhost"}},
		{"full", "amqp://user:pass@host:1234/vhost", Config{Addr: "host:1234", Username: "user", Password: "pass", Vhost: "vhost"}, nil},
		{"spec example", "amqp://user%61:%61pass@ho%61st:10000/v%2fhost", Config{Addr: "hoast:10000", Username: "usera", Password: "apass", Vhost: "v/host"}, nil},
		{"encoded colon and at", "amqp://us%3Aer:p%40ss%3aw@host", def(Config{Addr: "host:5672", Username: "us:er", Password: "p@ss:w"}), nil},
		{"raw colon in password", "amqp://u:pa:ss@h", def(Config{Addr: "h:5672", Username: "u", Password: "pa:ss"}), nil},
		{"plus stays plus", "amqp://u+1:p+w@h/a+b", Config{Addr: "h:5672", Username: "u+1", Password: "p+w", Vhost: "a+b"}, nil},
		{"sub-delims in password", "amqp://u:!$&'()*,;=@h", def(Config{Addr: "h:5672", Username: "u", Password: "!$&'()*,;="}), nil},
		{"empty user and password", "amqp://:@host", def(Config{Addr: "host:5672"}), nil},
		{"empty userinfo", "amqp://@host", def(Config{Addr: "host:5672"}), nil},
		{"user without password", "amqp://bob@host", def(Config{Addr: "host:5672", Username: "bob", Password: "guest"}), nil},
		{"user with empty password", "amqp://bob:@host", def(Config{Addr: "host:5672", Username: "bob", Password: "guest"}), nil},
		{"password without user", "amqp://:secret@host", def(Config{Addr: "host:5672", Username: "guest", Password: "secret"}), nil},
		{"ipv6", "amqp://[::1]", def(Config{Addr: "[::1]:5672"}), nil},
		{"ipv6 port", "amqp://[::1]:5673/", def(Config{Addr: "[::1]:5673"}), nil},
		{"ipv6 tls", "amqps://[2001:db8::1]", def(Config{Addr: "[2001:db8::1]:5671"}), &tlsWant{serverName: "2001:db8::1"}},
		{"ipv6 zone", "amqps://[fe80::1%25eth0]:5672", def(Config{Addr: "[fe80::1%eth0]:5672"}), &tlsWant{serverName: "fe80::1"}},
		{"ipv4-mapped ipv6", "amqp://[::ffff:10.0.0.1]", def(Config{Addr: "[::ffff:10.0.0.1]:5672"}), nil},
		{"ipv4", "amqp://127.0.0.1:5672", def(Config{Addr: "127.0.0.1:5672"}), nil},
		{"port only", "amqp://:10000", def(Config{Addr: "localhost:10000"}), nil},
		{"port leading zeros", "amqp://h:0005672", def(Config{Addr: "h:5672"}), nil},
		{"port max", "amqp://h:65535", def(Config{Addr: "h:65535"}), nil},
		{"vhost without host", "amqp:///vhost", Config{Addr: "localhost:5672", Vhost: "vhost"}, nil},
		{"vhost slash lower", "amqp://host/%2f", Config{Addr: "host:5672", Vhost: "/"}, nil},
		{"vhost slash upper", "amqp://host/%2F", Config{Addr: "host:5672", Vhost: "/"}, nil},
		{"vhost encoded slash", "amqp://host/foo%2Fbar", Config{Addr: "host:5672", Vhost: "foo/bar"}, nil},
		{"vhost utf8", "amqp://host/caf%C3%A9", Config{Addr: "host:5672", Vhost: "café"}, nil},
		{"vhost colon and at", "amqp://u:p@host/a:b@c", Config{Addr: "host:5672", Username: "u", Password: "p", Vhost: "a:b@c"}, nil},
		{"vhost with at, no userinfo", "amqp://host/team@corp", Config{Addr: "host:5672", Vhost: "team@corp"}, nil},
		{"vhost 255 bytes", "amqp://h/" + strings.Repeat("v", 255), Config{Addr: "h:5672", Vhost: strings.Repeat("v", 255)}, nil},
		{"encoded host", "amqp://caf%C3%A9.example", def(Config{Addr: "café.example:5672"}), nil},
		{"underscore host", "amqp://rabbit_1.local", def(Config{Addr: "rabbit_1.local:5672"}), nil},
		{"query without path", "amqp://host?heartbeat=5", def(Config{Addr: "host:5672", Heartbeat: 5 * time.Second}), nil},
		{"heartbeat zero", "amqp://h/?heartbeat=0", def(Config{Addr: "h:5672", Heartbeat: NoHeartbeat}), nil},
		{"heartbeat max", "amqp://h/?heartbeat=65535", def(Config{Addr: "h:5672", Heartbeat: 65535 * time.Second}), nil},
		{"frame_max min", "amqp://h/?frame_max=4096", def(Config{Addr: "h:5672", FrameMax: 4096}), nil},
		{"frame_max max", "amqp://h/?frame_max=4294967295", def(Config{Addr: "h:5672", FrameMax: 4294967295}), nil},
		{"channel_max zero", "amqp://h/?channel_max=0", def(Config{Addr: "h:5672", ChannelMax: 65535}), nil},
		{"channel_max", "amqp://h/?channel_max=10", def(Config{Addr: "h:5672", ChannelMax: 10}), nil},
		{"connection_timeout", "amqp://h/?connection_timeout=10000", def(Config{Addr: "h:5672", DialTimeout: 10 * time.Second}), nil},
		{"connection_timeout max", "amqp://h/?connection_timeout=2147483647", def(Config{Addr: "h:5672", DialTimeout: 2147483647 * time.Millisecond}), nil},
		{"connection_name", "amqp://h/?connection_name=my%20app%2Fv1", def(Config{Addr: "h:5672", ConnectionName: "my app/v1"}), nil},
		{"connection_name raw chars", "amqp://h/?connection_name=a+b/c?d:e@f", def(Config{Addr: "h:5672", ConnectionName: "a+b/c?d:e@f"}), nil},
		{"connection_name empty", "amqp://h/?connection_name=", def(Config{Addr: "h:5672"}), nil},
		{"empty query", "amqp://h/?", def(Config{Addr: "h:5672"}), nil},
		{"empty query parts", "amqp://h/?&&heartbeat=5&", def(Config{Addr: "h:5672", Heartbeat: 5 * time.Second}), nil},
		{"encoded option name", "amqp://h/?heart%62eat=7", def(Config{Addr: "h:5672", Heartbeat: 7 * time.Second}), nil},
		{"all plain options", "amqp://h/v?heartbeat=10&frame_max=8192&channel_max=100&connection_timeout=1500&connection_name=x",
			Config{Addr: "h:5672", Vhost: "v", Heartbeat: 10 * time.Second, FrameMax: 8192, ChannelMax: 100, DialTimeout: 1500 * time.Millisecond, ConnectionName: "x"}, nil},
		{"auth external", "amqp://h/?auth_mechanism=external", def(Config{Addr: "h:5672", Mechanisms: []Mechanism{ExternalAuth{}}}), nil},
		{"auth list with credentials", "amqp://u:p@h/?auth_mechanism=PLAIN,amqplain", def(Config{Addr: "h:5672", Username: "u", Password: "p",
			Mechanisms: []Mechanism{PlainAuth{Username: "u", Password: "p"}, AMQPlainAuth{Username: "u", Password: "p"}}}), nil},
		{"auth list with spaces", "amqp://u:p@h/?auth_mechanism=plain,%20external", def(Config{Addr: "h:5672", Username: "u", Password: "p",
			Mechanisms: []Mechanism{PlainAuth{Username: "u", Password: "p"}, ExternalAuth{}}}), nil},
		{"auth repeated default credentials", "amqp://h/?auth_mechanism=AMQPlain&auth_mechanism=plain", def(Config{Addr: "h:5672",
			Mechanisms: []Mechanism{AMQPlainAuth{Username: "guest", Password: "guest"}, PlainAuth{Username: "guest", Password: "guest"}}}), nil},
		{"shuffle_addrs", "amqp://h1,h2/?shuffle_addrs=true", def(Config{Addr: "h1:5672", Addrs: []string{"h1:5672", "h2:5672"}, ShuffleAddrs: true}), nil},
		{"shuffle_addrs upper case", "amqp://h/?shuffle_addrs=TRUE", def(Config{Addr: "h:5672", ShuffleAddrs: true}), nil},
		{"shuffle_addrs false", "amqp://h1,h2/?shuffle_addrs=false", def(Config{Addr: "h1:5672", Addrs: []string{"h1:5672", "h2:5672"}}), nil},
		{"verify_none", "amqps://h/?verify=verify_none", def(Config{Addr: "h:5671"}), &tlsWant{serverName: "h", insecure: true}},
		{"verify_peer", "amqps://h/?verify=VERIFY_PEER", def(Config{Addr: "h:5671"}), &tlsWant{serverName: "h"}},
		{"server_name_indication", "amqps://10.0.0.1/?server_name_indication=rabbit.example", def(Config{Addr: "10.0.0.1:5671"}), &tlsWant{serverName: "rabbit.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseURL(tt.url)
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tt.url, err)
			}
			gotTLS := got.TLS
			got.TLS = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseURL(%q)\n got %+v\nwant %+v", tt.url, got, tt.want)
			}
			switch {
			case tt.tls == nil && gotTLS != nil:
				t.Errorf("TLS = %+v, want nil", gotTLS)
			case tt.tls != nil && gotTLS == nil:
				t.Errorf("TLS = nil, want %+v", *tt.tls)
			case tt.tls != nil:
				if gotTLS.ServerName != tt.tls.serverName {
					t.Errorf("TLS.ServerName = %q, want %q", gotTLS.ServerName, tt.tls.serverName)
				}
				if gotTLS.InsecureSkipVerify != tt.tls.insecure {
					t.Errorf("TLS.InsecureSkipVerify = %v, want %v", gotTLS.InsecureSkipVerify, tt.tls.insecure)
				}
				if gotTLS.MinVersion != tls.VersionTLS12 {
					t.Errorf("TLS.MinVersion = %#x, want TLS 1.2", gotTLS.MinVersion)
				}
				if gotTLS.RootCAs != nil || gotTLS.Certificates != nil {
					t.Errorf("TLS has RootCAs or Certificates without cacertfile/certfile")
				}
			}
		})
	}
}

// uriTestPassword is the password in the error tests; no error may contain
// it or its pieces.
const uriTestPassword = "hunter2"

func TestParseURLErrors(t *testing.T) {
	long := strings.Repeat("v", 256)
	tests := []struct {
		name string
		url  string
		want string // substring of the error
	}{
		{"empty", "", "missing scheme"},
		{"no scheme", "localhost", "missing scheme"},
		{"scheme is a user", "u:hunter2@host", `unsupported scheme "u"`},
		{"unsupported scheme", "http://u:hunter2@host/", `unsupported scheme "http"`},
		{"invalid scheme", "1amqp://host", `invalid scheme "1amqp"`},
		{"leading space", " amqp://host", `invalid scheme " amqp"`},
		{"missing slashes", "amqp:u:hunter2@host", `missing "//" after "amqp:"`},
		{"one slash", "amqp:/host", `missing "//"`},
		{"fragment", "amqp://u:hunter2@host/vh#frag", "fragment"},
		{"fragment after query", "amqp://host/?heartbeat=5#x", "fragment"},
		{"two at signs", "amqp://u:hun@ter2@host", "unencoded '@' in the username or password"},
		{"slash in password", "amqp://u:hun/ter2@host/", "percent-encode"},
		{"question mark in password", "amqp://u:hun?ter2@host/", "percent-encode"},
		{"hash in password", "amqp://u:hun#ter2@host/", "fragment"},
		{"bad escape in password", "amqp://u:hunter2%zz@host", "bad percent-encoding in the password"},
		{"truncated escape in password", "amqp://u:hunter2%4@host", "bad percent-encoding in the password"},
		{"bad escape in username", "amqp://u%g1:hunter2@host", "bad percent-encoding in the username"},
		{"space in password", "amqp://u:hun ter2@host", "a space"},
		{"control in password", "amqp://u:hun\tter2@host", "control character 0x09"},
		{"bracket in password", "amqp://u:hun[ter2@host", `unencoded '['`},
		{"non-ascii in password", "amqp://u:hünter2@host", "non-ASCII"},
		{"nul in password", "amqp://u:hunter2%00@host", "password contains a NUL"},
		{"nul in username", "amqp://u%00:hunter2@host", "username contains a NUL"},
		{"port too big", "amqp://u:hunter2@host:99999", `invalid port "99999"`},
		{"port huge", "amqp://host:99999999999999999999999", "invalid port"},
		{"port zero", "amqp://u:hunter2@host:0", `invalid port "0"`},
		{"port letters", "amqp://host:abc/", `invalid port "abc"`},
		{"port negative", "amqp://host:-1", `invalid port "-1"`},
		{"port plus", "amqp://host:+5", `invalid port "+5"`},
		{"port empty", "amqp://u:hunter2@host:/", "empty port"},
		{"ipv6 port empty", "amqp://[::1]:", "empty port"},
		{"ipv6 port bad", "amqp://[::1]:x", `invalid port "x"`},
		{"ipv6 without brackets", "amqp://::1", "must be in brackets"},
		{"ipv6 without brackets and port", "amqp://u:hunter2@fe80::1:5672/", "must be in brackets"},
		{"ipv6 unterminated", "amqp://[::1", "missing ']'"},
		{"ipv6 junk after bracket", "amqp://[::1]x", "want ':' and a port"},
		{"ipv4 in brackets", "amqp://[10.0.0.1]", "invalid IPv6 address"},
		{"ipvfuture", "amqp://[v1.fe]", "invalid IPv6 address"},
		{"empty brackets", "amqp://[]", "invalid IPv6 address"},
		{"ipv6 raw zone", "amqp://[fe80::1%eth0]", "zone is written %25"},
		{"ipv6 empty zone", "amqp://[fe80::1%25]", "bad zone"},
		{"ipv6 bad zone escape", "amqp://[fe80::1%25e%zz]", "bad zone"},
		{"space in host", "amqp://ho st/", `host "ho st" contains a space`},
		{"bad escape in host", "amqp://ho%zzst", "bad percent-encoding in host"},
		{"percent runs in host", "amqps://%%0%0%0%0?0", "bad percent-encoding in host"},
		{"encoded slash in host", "amqp://ho%2Fst", `host "ho/st" is not a valid host name`},
		{"encoded colon in host", "amqp://ho%3Ast", "not a valid host name"},
		{"bad utf8 in host", "amqp://ho%FFst", "not a valid host name"},
		{"brace in host", "amqp://ho{st", `unencoded '{'`},
		{"two-segment path", "amqp://u:hunter2@host/a/b", `path "/a/b" has more than one '/'`},
		{"double slash path", "amqp://host//", "more than one '/'"},
		{"space in vhost", "amqp://host/a b", `vhost "a b" contains a space`},
		{"pipe in vhost", "amqp://host/a|b", `unencoded '|'`},
		{"bad escape in vhost", "amqp://host/a%zz", "bad percent-encoding in vhost"},
		{"vhost too long", "amqp://host/" + long, "vhost is 256 bytes long"},
		{"unknown option", "amqp://u:hunter2@host/?foo=1", `unknown option "foo" (known: auth_mechanism`},
		{"option case", "amqp://host/?Heartbeat=5", `unknown option "Heartbeat"`},
		{"option without value", "amqp://host/?heartbeat", "option heartbeat has no value"},
		{"option without name", "amqp://host/?=5", "option without a name"},
		{"bad escape in option name", "amqp://host/?heart%zzbeat=5", "bad percent-encoding in option name"},
		{"bad escape in option value", "amqp://host/?connection_name=%zz", "bad percent-encoding in the value of option connection_name"},
		{"space in query", "amqp://host/?heartbeat=5 ", "the query contains a space"},
		{"repeated option", "amqp://host/?heartbeat=5&heartbeat=6", "option heartbeat given more than once"},
		{"repeated connection_name", "amqp://host/?connection_name=a&connection_name=b", "option connection_name given more than once"},
		{"heartbeat too big", "amqp://host/?heartbeat=65536", `heartbeat="65536": want seconds 0..65535`},
		{"heartbeat negative", "amqp://host/?heartbeat=-1", "want seconds 0..65535"},
		{"heartbeat not a number", "amqp://host/?heartbeat=abc", `heartbeat="abc"`},
		{"heartbeat fraction", "amqp://host/?heartbeat=1.5", "want seconds"},
		{"heartbeat empty", "amqp://host/?heartbeat=", `heartbeat=""`},
		{"frame_max zero", "amqp://host/?frame_max=0", "want bytes 4096..4294967295"},
		{"frame_max too small", "amqp://host/?frame_max=4095", `frame_max="4095"`},
		{"frame_max too big", "amqp://host/?frame_max=4294967296", "want bytes 4096..4294967295"},
		{"channel_max too big", "amqp://host/?channel_max=65536", "want 0..65535"},
		{"connection_timeout zero", "amqp://host/?connection_timeout=0", "want milliseconds 1..2147483647"},
		{"connection_timeout too big", "amqp://host/?connection_timeout=2147483648", "want milliseconds"},
		{"connection_timeout unit", "amqp://host/?connection_timeout=10s", `connection_timeout="10s"`},
		{"unknown mechanism", "amqp://host/?auth_mechanism=scram-sha-256", `auth_mechanism="scram-sha-256": unknown mechanism`},
		{"empty mechanism", "amqp://host/?auth_mechanism=", "empty entry"},
		{"shuffle_addrs number", "amqp://h1,h2/?shuffle_addrs=1", `option shuffle_addrs="1": want true or false`},
		{"shuffle_addrs empty", "amqp://h1,h2/?shuffle_addrs=", `option shuffle_addrs="": want true or false`},
		{"shuffle_addrs without value", "amqp://h1,h2/?shuffle_addrs", "option shuffle_addrs has no value"},
		{"shuffle_addrs repeated", "amqp://h1,h2/?shuffle_addrs=true&shuffle_addrs=false", "option shuffle_addrs given more than once"},
		{"trailing comma mechanism", "amqp://host/?auth_mechanism=plain,", "empty entry"},
		{"duplicate mechanism in list", "amqp://host/?auth_mechanism=plain,PLAIN", "lists PLAIN more than once"},
		{"duplicate mechanism repeated", "amqp://host/?auth_mechanism=external&auth_mechanism=External", "lists EXTERNAL more than once"},
		{"cacertfile without tls", "amqp://host/?cacertfile=/ca.pem", "option cacertfile is for TLS connections only"},
		{"certfile without tls", "amqp://host/?certfile=/c.pem", "option certfile is for TLS connections only"},
		{"keyfile without tls", "amqp://host/?keyfile=/k.pem", "option keyfile is for TLS connections only"},
		{"sni without tls", "amqp://host/?server_name_indication=x", "option server_name_indication is for TLS"},
		{"verify without tls", "amqp://host/?verify=verify_none", "option verify is for TLS"},
		{"verify bad", "amqps://host/?verify=maybe", `verify="maybe": want verify_peer or verify_none`},
		{"verify repeated", "amqps://host/?verify=verify_none&verify=verify_peer", "option verify given more than once"},
		{"sni empty", "amqps://host/?server_name_indication=", "server_name_indication is empty"},
		{"sni disable", "amqps://host/?server_name_indication=disable", "server_name_indication=disable is not supported"},
		{"cacertfile empty", "amqps://host/?cacertfile=", "option cacertfile is empty"},
		{"certfile empty", "amqps://host/?certfile=", "option certfile is empty"},
		{"keyfile empty", "amqps://host/?keyfile=", "option keyfile is empty"},
		{"certfile without keyfile", "amqps://u:hunter2@host/?certfile=/nonexistent/c.pem", "option certfile needs keyfile"},
		{"keyfile without certfile", "amqps://host/?keyfile=/nonexistent/k.pem", "option keyfile needs certfile"},
		{"cacertfile missing", "amqps://u:hunter2@host/?cacertfile=/nonexistent/ca.pem", `cacertfile "/nonexistent/ca.pem": file not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseURL(tt.url)
			if err == nil {
				t.Fatalf("ParseURL(%q) = %+v, want an error containing %q", tt.url, cfg, tt.want)
			}
			if !errors.Is(err, ErrBadURL) {
				t.Errorf("error %q does not wrap ErrBadURL", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "pika: bad AMQP URL: ") {
				t.Errorf("error %q lacks the package prefix", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("ParseURL(%q) error\n %q\ndoes not contain\n %q", tt.url, msg, tt.want)
			}
			checkNoSecret(t, msg, uriTestPassword, "hun", "ter2")
		})
	}
}

// checkNoSecret fails if msg contains any of the pieces of a password.
func checkNoSecret(t *testing.T, msg string, pieces ...string) {
	t.Helper()
	for _, p := range pieces {
		if strings.Contains(msg, p) {
			t.Errorf("%q contains the password piece %q", msg, p)
		}
	}
}

// TestParseURLHidesMisplacedPassword puts every character that may break a
// URL into the middle of a password and checks that neither the errors nor
// RedactURL ever show a piece of it.
func TestParseURLHidesMisplacedPassword(t *testing.T) {
	const before, after = "Pw0rdX", "Zq9Secret"
	breakers := " /?#@%[]<>\"|{}^`\\:\t\x00\x7f\xc3"
	suffixes := []string{"", "/", "/vh", "/vh?heartbeat=5", "?connection_name=a@b", ":5672/a/b", ":99999/"}
	for i := 0; i < len(breakers); i++ {
		for _, suffix := range suffixes {
			for _, user := range []string{"user", "", "u/x"} {
				raw := "amqp://" + user + ":" + before + string(breakers[i]) + after + "@host" + suffix
				cfg, err := ParseURL(raw)
				if err != nil {
					if !errors.Is(err, ErrBadURL) {
						t.Errorf("ParseURL(%q): %v does not wrap ErrBadURL", raw, err)
					}
					checkNoSecret(t, err.Error(), before, after)
				} else if b := breakers[i]; b == ':' && user != "u/x" {
					// A raw ':' in the password is valid.
					if cfg.Password != before+":"+after {
						t.Errorf("ParseURL(%q).Password = %q", raw, cfg.Password)
					}
				}
				checkNoSecret(t, RedactURL(raw), before, after)
			}
		}
	}
}

func TestParseURLAmbiguousPasswordIsRedacted(t *testing.T) {
	// An unencoded '/' after a numeric password prefix makes a valid URL
	// with another meaning; RedactURL must still hide the password.
	raw := "amqp://u:1234/Secret@host"
	cfg, err := ParseURL(raw)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", raw, err)
	}
	if cfg.Addr != "u:1234" || cfg.Vhost != "Secret@host" {
		t.Fatalf("ParseURL(%q) = Addr %q Vhost %q, want u:1234 and Secret@host (RFC 3986 reading)", raw, cfg.Addr, cfg.Vhost)
	}
	if got := RedactURL(raw); strings.Contains(got, "Secret") || strings.Contains(got, "1234") {
		t.Errorf("RedactURL(%q) = %q, shows the password", raw, got)
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"amqp://user:pass@host:5672/vh", "amqp://user:xxxxx@host:5672/vh"},
		{"amqps://user:p%40ss@host/?heartbeat=5", "amqps://user:xxxxx@host/?heartbeat=5"},
		{"amqp://:pass@host", "amqp://:xxxxx@host"},
		{"amqp://user:pa:ss@host", "amqp://user:xxxxx@host"},
		{"amqp://user@host/", "amqp://user@host/"},
		{"amqp://user:@host/", "amqp://user:@host/"},
		{"amqp://host:5672/vh", "amqp://host:5672/vh"},
		{"amqp://host/team@corp", "amqp://host/team@corp"},
		{"amqp://u:p@host/a@b?connection_name=c@d", "amqp://u:xxxxx@host/a@b?connection_name=c@d"},
		{"amqp://u:p@ss@host/", "amqp://u:xxxxx@host/"},
		{"amqp://u:p/ss@host/", "amqp://u:xxxxx@host/"},
		{"amqp://u:p?ss@host/", "amqp://u:xxxxx@host/"},
		{"amqp://u:p#ss@host/", "amqp://u:xxxxx@host/"},
		{"amqp:u:pass@host", "amqp:xxxxx@host"},
		{"u:pass@host", "u:xxxxx@host"},
		{"", ""},
		{"not a url", "not a url"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"amqp://", "amqps://u:p@h:1/v?heartbeat=1&auth_mechanism=plain,external",
		"amqp://[fe80::1%25eth0]:5672/%2F", "amqp://u:p/q@h", "amqp://h/?frame_max=4096&channel_max=0",
		"amqps://h/?verify=verify_none&server_name_indication=x", "amqp://%zz@h", "amqps://%%0%0%0%0?0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		cfg, err := ParseURL(raw)
		_ = RedactURL(raw)
		if err != nil {
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("ParseURL(%q): %v does not wrap ErrBadURL", raw, err)
			}
			return
		}
		if cfg.Addr == "" || cfg.Vhost == "" {
			t.Fatalf("ParseURL(%q) = Addr %q Vhost %q, want both set", raw, cfg.Addr, cfg.Vhost)
		}
	})
}

func TestParseURLMultipleHosts(t *testing.T) {
	cfg, err := ParseURL("amqp://u:p@h1:5672,h2:5673,[::1]/v")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"h1:5672", "h2:5673", "[::1]:5672"}
	if cfg.Addr != "h1:5672" || len(cfg.Addrs) != 3 || cfg.Addrs[0] != want[0] || cfg.Addrs[1] != want[1] || cfg.Addrs[2] != want[2] {
		t.Fatalf("Addr %q Addrs %q, want %q", cfg.Addr, cfg.Addrs, want)
	}
	if cfg.Vhost != "v" || cfg.Username != "u" {
		t.Fatalf("vhost %q user %q", cfg.Vhost, cfg.Username)
	}
	cfg, err = ParseURL("amqps://h1,h2/")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.ServerName != "" || cfg.Addrs[1] != "h2:5671" {
		t.Fatalf("amqps cluster: ServerName %q Addrs %q", cfg.TLS.ServerName, cfg.Addrs)
	}
	for _, bad := range []string{"amqp://h1,/", "amqp://,h2/", "amqp://h1,h2:99999/"} {
		if _, err := ParseURL(bad); !errors.Is(err, ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL", bad, err)
		}
	}
	if cfg, err := ParseURL("amqp://h1/"); err != nil || cfg.Addrs != nil {
		t.Fatalf("single host sets Addrs %q (%v)", cfg.Addrs, err)
	}
}
