package pika

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrBadURL is wrapped by every error that ParseURL returns, whatever part
// of the URL was wrong; errors about certificate files wrap the file
// system's error too (errors.Is(err, fs.ErrNotExist) works).
var ErrBadURL = errors.New("pika: bad AMQP URL")

// Defaults that ParseURL fills in for parts a URL leaves out.
const (
	// defaultAMQPPort is the port of amqp URLs without one.
	defaultAMQPPort = 5672
	// defaultAMQPSPort is the port of amqps URLs without one.
	defaultAMQPSPort = 5671
	// defaultCredential is RabbitMQ's default username and password.
	defaultCredential = "guest"
)

// ParseURL parses an AMQP URI as RabbitMQ's URI specification defines it,
// with the query parameters of RabbitMQ's "URI Query Parameters" guide:
//
//	amqp[s]://[username[:password]@]host[:port][/vhost][?option=value&...]
//
// The scheme (case-insensitive) is amqp, default port 5672, or amqps,
// default port 5671, which sets Config.TLS to a *tls.Config with ServerName
// set to the host and MinVersion TLS 1.2.
//
// The username and password are percent-decoded, so a ':' in a username is
// written %3A and an '@' %40; an unencoded '/', '?', '#' or '@' in them is
// an error or a misparse. An absent or empty username or password means
// RabbitMQ's default, "guest": "amqp://host" and "amqp://:@host" both leave
// Username and Password empty, which Config reads as guest/guest, while
// "amqp://bob@host" sets Username "bob" and Password "guest" (the URI
// specification's default for an absent password). A '+' is a plus, not a
// space, everywhere in the URL.
//
// The host is a name, an IPv4 address or an IPv6 address in brackets
// ("[::1]:5672", with an optional zone written "%25", "[fe80::1%25eth0]");
// an empty host means "localhost". The port, when given, is 1..65535.
// Config.Addr is always set, to net.JoinHostPort(host, port). Several
// hosts separated by commas ("amqp://u:p@h1:5672,h2:5673/vhost") name a
// cluster: Config.Addrs lists them all, Config.Addr is the first, and every
// connection attempt tries them in turn (each verified under its own name
// with amqps).
//
// The vhost is the path without its leading '/', percent-decoded:
// "amqp://host/%2F" is the vhost "/" and "amqp://host/a%2Fb" is "a/b". Both
// "amqp://host" and "amqp://host/" mean the default vhost "/" (the URI
// specification reads the latter as the empty-named vhost, which RabbitMQ
// does not create and which is almost never meant). A path with a second
// unencoded '/' ("/a/b") is an error: write it "/a%2Fb".
//
// The options, each at most once unless noted, are:
//
//   - heartbeat: seconds, 0..65535, as Config.Heartbeat; 0 disables
//     heartbeats (NoHeartbeat); absent means DefaultHeartbeat (10 s).
//   - frame_max: bytes, 4096..4294967295. The Erlang client's 0 ("no
//     limit") is refused: it would let the broker send frames of any size.
//   - channel_max: 0..65535; 0 means no limit, that is 65535.
//   - connection_timeout: milliseconds, 1..2147483647, as Config.DialTimeout.
//   - connection_name: the name shown by the management UI.
//   - auth_mechanism: plain, amqplain or external (case-insensitive), as a
//     comma-separated list and/or repeated; sets Config.Mechanisms in that
//     order, PLAIN and AMQPLAIN with the URL's username and password
//     (guest/guest when absent). Later changes to Config.Username and
//     Config.Password do not reach mechanisms set this way.
//   - shuffle_addrs: true or false (case-insensitive), as
//     Config.ShuffleAddrs: every connection attempt tries the URL's hosts
//     in a random order, to spread clients over a cluster. No effect with
//     a single host. Not one of RabbitMQ's options: other clients reject
//     or ignore it.
//
// Options for amqps only (an error with amqp):
//
//   - cacertfile: a PEM file of CA certificates, which become RootCAs and
//     replace the system's roots.
//   - certfile and keyfile, together: the client certificate chain and its
//     private key (PKCS #1, PKCS #8 or SEC 1, unencrypted) in PEM, for
//     Certificates. ParseURL reads the files.
//   - server_name_indication: the name to send in SNI and to verify the
//     broker's certificate against, instead of the host.
//   - verify: verify_peer (the default) or verify_none, which sets
//     InsecureSkipVerify. Use verify_none only for tests.
//
// Any other option, an option without '=', a repeated option or a value out
// of range is an error naming the option. Every error wraps ErrBadURL and
// names the offending part; no error ever contains the password, and when
// the URL looks like an unencoded character split the password off (an '@'
// after the host), errors quote nothing from the URL at all.
func ParseURL(rawURL string) (Config, error) {
	var p uriParser
	return p.parse(rawURL)
}

// uriParser holds the state of one ParseURL call.
type uriParser struct {
	// hide is set when part of the password may sit outside the userinfo
	// (an unencoded '/', '?' or '#' in it); errors then quote nothing.
	hide bool
}

// urlError is the error type of ParseURL: a message, ErrBadURL and an
// optional cause (a file system or x509 error).
type urlError struct {
	msg   string
	cause error
}

func (e *urlError) Error() string { return ErrBadURL.Error() + ": " + e.msg }

func (e *urlError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrBadURL}
	}
	return []error{ErrBadURL, e.cause}
}

// errorf returns a *urlError; with p.hide it adds the hint about the
// password.
func (p *uriParser) errorf(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if p.hide {
		msg += " (the URL has an '@' after the host: if the username or password contains '/', '?', '#' or '@', percent-encode it as %2F, %3F, %23 or %40)"
	}
	return &urlError{msg: msg}
}

// q quotes s from the URL for an error message, unless p.hide.
func (p *uriParser) q(s string) string {
	if p.hide {
		return "(not shown)"
	}
	return strconv.Quote(s)
}

// uriOptions are the query options after validation.
type uriOptions struct {
	seen       map[string]bool
	mechanisms []string // upper case, in order

	cacertfile, certfile, keyfile string
	serverName                    string
	insecure                      bool
}

func (p *uriParser) parse(raw string) (Config, error) {
	var cfg Config

	// scheme ":" "//"
	colon := strings.IndexByte(raw, ':')
	if colon < 0 {
		return cfg, p.errorf("missing scheme: want amqp:// or amqps://")
	}
	scheme := raw[:colon]
	if !validScheme(scheme) {
		return cfg, p.errorf("invalid scheme %q: want amqp:// or amqps://", scheme)
	}
	useTLS := false
	switch strings.ToLower(scheme) {
	case "amqp":
	case "amqps":
		useTLS = true
	default:
		return cfg, p.errorf("unsupported scheme %q: want amqp or amqps", scheme)
	}
	rest := raw[colon+1:]
	if !strings.HasPrefix(rest, "//") {
		return cfg, p.errorf("missing \"//\" after %q", scheme+":")
	}
	rest = rest[2:]

	// authority, then path, query and fragment.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if !strings.Contains(authority, "@") && strings.Contains(tail, "@") {
		p.hide = true
	}
	if i := strings.IndexByte(tail, '#'); i >= 0 {
		return cfg, p.errorf("the URL has a fragment ('#'), which AMQP URLs do not take; percent-encode a '#' as %%23")
	}
	path, query, hasQuery := strings.Cut(tail, "?")

	// userinfo "@" hostport
	var (
		user, pass       string
		hasUser, hasPass bool
		hostport         = authority
	)
	if at := strings.IndexByte(authority, '@'); at >= 0 {
		if strings.Count(authority, "@") > 1 {
			return cfg, p.errorf("unencoded '@' in the username or password; percent-encode it as %%40")
		}
		var err error
		user, pass, hasPass, err = p.userinfo(authority[:at])
		if err != nil {
			return cfg, err
		}
		hasUser = true
		hostport = authority[at+1:]
	}
	// A comma-separated list of hosts names a cluster: every connection
	// attempt tries them in turn (Config.Addrs).
	var serverName string
	hosts := strings.Split(hostport, ",")
	for i, hp := range hosts {
		if hp == "" && len(hosts) > 1 {
			return cfg, p.errorf("empty host in the host list (entry %d)", i+1)
		}
		host, sn, port, err := p.hostport(hp, useTLS)
		if err != nil {
			return cfg, err
		}
		addr := net.JoinHostPort(host, port)
		if i == 0 {
			cfg.Addr, serverName = addr, sn
		} else {
			serverName = "" // each address is verified under its own name
		}
		cfg.Addrs = append(cfg.Addrs, addr)
	}
	if len(cfg.Addrs) == 1 {
		cfg.Addrs = nil
	}
	var err error

	// Credentials: absent or empty means "guest"; both default leaves the
	// Config fields empty.
	if hasUser && user != "" || hasPass && pass != "" {
		cfg.Username, cfg.Password = user, pass
		if cfg.Username == "" {
			cfg.Username = defaultCredential
		}
		if cfg.Password == "" {
			cfg.Password = defaultCredential
		}
	}

	if cfg.Vhost, err = p.vhost(path); err != nil {
		return cfg, err
	}

	opts := uriOptions{seen: make(map[string]bool)}
	if hasQuery {
		if err := p.options(query, useTLS, &cfg, &opts); err != nil {
			return cfg, err
		}
	}

	if len(opts.mechanisms) > 0 {
		u, pw := cfg.Username, cfg.Password
		if u == "" && pw == "" {
			u, pw = defaultCredential, defaultCredential
		}
		for _, m := range opts.mechanisms {
			switch m {
			case "PLAIN":
				cfg.Mechanisms = append(cfg.Mechanisms, PlainAuth{Username: u, Password: pw})
			case "AMQPLAIN":
				cfg.Mechanisms = append(cfg.Mechanisms, AMQPlainAuth{Username: u, Password: pw})
			case "EXTERNAL":
				cfg.Mechanisms = append(cfg.Mechanisms, ExternalAuth{})
			}
		}
	}

	if useTLS {
		tc := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
		if opts.serverName != "" {
			tc.ServerName = opts.serverName
		}
		tc.InsecureSkipVerify = opts.insecure
		if opts.cacertfile != "" {
			if tc.RootCAs, err = loadCAFile(opts.cacertfile); err != nil {
				return cfg, err
			}
		}
		switch {
		case opts.certfile != "" && opts.keyfile == "":
			return cfg, p.errorf("option certfile needs keyfile (the client certificate's private key)")
		case opts.keyfile != "" && opts.certfile == "":
			return cfg, p.errorf("option keyfile needs certfile (the client certificate)")
		case opts.certfile != "":
			cert, err := loadKeyPairFiles(opts.certfile, opts.keyfile)
			if err != nil {
				return cfg, err
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = tc
	}
	return cfg, nil
}

// userinfo splits and decodes "user[:password]". Its errors never quote.
func (p *uriParser) userinfo(s string) (user, pass string, hasPass bool, err error) {
	if i, c := firstInvalid(s, ":"); i >= 0 {
		return "", "", false, p.errorf("the username or password contains %s", describeByte(c))
	}
	rawUser, rawPass, hasPass := strings.Cut(s, ":")
	var ok bool
	if user, ok = uriUnescape(rawUser); !ok {
		return "", "", false, p.errorf("bad percent-encoding in the username (want %% and two hex digits)")
	}
	if pass, ok = uriUnescape(rawPass); !ok {
		return "", "", false, p.errorf("bad percent-encoding in the password (want %% and two hex digits)")
	}
	if strings.IndexByte(user, 0) >= 0 {
		return "", "", false, p.errorf("the username contains a NUL byte (%%00), which SASL does not allow")
	}
	if strings.IndexByte(pass, 0) >= 0 {
		return "", "", false, p.errorf("the password contains a NUL byte (%%00), which SASL does not allow")
	}
	return user, pass, hasPass, nil
}

// hostport parses host[:port] and returns the host for net.JoinHostPort,
// the TLS server name and the port.
func (p *uriParser) hostport(s string, useTLS bool) (host, serverName, port string, err error) {
	var portPart string
	hasPort := false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", "", p.errorf("host %s: missing ']' after the IPv6 address", p.q(s))
		}
		if host, serverName, err = p.ipv6(s[1:end]); err != nil {
			return "", "", "", err
		}
		after := s[end+1:]
		if after != "" {
			if after[0] != ':' {
				return "", "", "", p.errorf("host %s: want ':' and a port after ']'", p.q(s))
			}
			portPart, hasPort = after[1:], true
		}
	} else {
		rawHost := s
		if i := strings.IndexByte(s, ':'); i >= 0 {
			if strings.IndexByte(s[i+1:], ':') >= 0 {
				return "", "", "", p.errorf("host %s: an IPv6 address must be in brackets, like amqp://[::1]:5672/", p.q(s))
			}
			rawHost, portPart, hasPort = s[:i], s[i+1:], true
		}
		if i, c := firstInvalid(rawHost, ""); i >= 0 {
			return "", "", "", p.errorf("host %s contains %s", p.q(rawHost), describeByte(c))
		}
		h, ok := uriUnescape(rawHost)
		if !ok {
			return "", "", "", p.errorf("bad percent-encoding in host %s (want %% and two hex digits)", p.q(rawHost))
		}
		if !validHostName(h) {
			return "", "", "", p.errorf("host %s is not a valid host name or IPv4 address", p.q(h))
		}
		if h == "" {
			h = "localhost"
		}
		host, serverName = h, h
	}

	switch {
	case !hasPort && useTLS:
		port = strconv.Itoa(defaultAMQPSPort)
	case !hasPort:
		port = strconv.Itoa(defaultAMQPPort)
	case portPart == "":
		return "", "", "", p.errorf("empty port after ':'; give a port or leave out the ':'")
	default:
		n, ok := uriDecimal(portPart, 65535)
		if !ok || n == 0 {
			return "", "", "", p.errorf("invalid port %s: want a number 1..65535", p.q(portPart))
		}
		port = strconv.FormatUint(n, 10)
	}
	return host, serverName, port, nil
}

// ipv6 parses the inside of "[...]": an IPv6 address with an optional zone
// written %25zone (RFC 6874).
func (p *uriParser) ipv6(s string) (host, serverName string, err error) {
	addr, zone, hasZone := strings.Cut(s, "%25")
	if hasZone {
		z, ok := uriUnescape(zone)
		if !ok || z == "" {
			return "", "", p.errorf("IPv6 address %s: bad zone after %%25", p.q(s))
		}
		zone = z
	}
	if strings.ContainsAny(addr, "%") {
		return "", "", p.errorf("IPv6 address %s: a zone is written %%25 then the zone, like [fe80::1%%25eth0]", p.q(s))
	}
	ip, perr := netip.ParseAddr(addr)
	if perr != nil || !ip.Is6() || ip.Zone() != "" {
		return "", "", p.errorf("invalid IPv6 address %s in brackets", p.q(s))
	}
	host = addr
	if hasZone {
		host = addr + "%" + zone
		if _, perr := netip.ParseAddr(host); perr != nil {
			return "", "", p.errorf("IPv6 address %s: invalid zone", p.q(s))
		}
	}
	return host, addr, nil
}

// vhost decodes the path into a vhost name.
func (p *uriParser) vhost(path string) (string, error) {
	if path == "" || path == "/" {
		return "/", nil
	}
	seg := path[1:] // path starts with '/'
	if strings.IndexByte(seg, '/') >= 0 {
		return "", p.errorf("path %s has more than one '/': the vhost is a single path segment; percent-encode a '/' in it as %%2F (the vhost \"/\" is amqp://host/%%2F)", p.q(path))
	}
	if i, c := firstInvalid(seg, ":@"); i >= 0 {
		return "", p.errorf("vhost %s contains %s", p.q(seg), describeByte(c))
	}
	v, ok := uriUnescape(seg)
	if !ok {
		return "", p.errorf("bad percent-encoding in vhost %s (want %% and two hex digits)", p.q(seg))
	}
	if len(v) > 255 {
		return "", p.errorf("vhost is %d bytes long; AMQP allows at most 255", len(v))
	}
	return v, nil
}

// uriKnownOptions lists the query options: whether each is for amqps only.
var uriKnownOptions = map[string]bool{
	"heartbeat":              false,
	"frame_max":              false,
	"channel_max":            false,
	"connection_timeout":     false,
	"connection_name":        false,
	"auth_mechanism":         false,
	"shuffle_addrs":          false,
	"cacertfile":             true,
	"certfile":               true,
	"keyfile":                true,
	"server_name_indication": true,
	"verify":                 true,
}

const uriKnownOptionList = "auth_mechanism, cacertfile, certfile, channel_max, connection_name, connection_timeout, frame_max, heartbeat, keyfile, server_name_indication, shuffle_addrs, verify"

// options parses the query into cfg and opts.
func (p *uriParser) options(query string, useTLS bool, cfg *Config, opts *uriOptions) error {
	if i, c := firstInvalid(query, ":@/?"); i >= 0 {
		return p.errorf("the query contains %s", describeByte(c))
	}
	for query != "" {
		var part string
		part, query, _ = strings.Cut(query, "&")
		if part == "" {
			continue
		}
		rawName, rawValue, hasValue := strings.Cut(part, "=")
		name, ok := uriUnescape(rawName)
		if !ok {
			return p.errorf("bad percent-encoding in option name %s", p.q(rawName))
		}
		if name == "" {
			return p.errorf("query has an option without a name")
		}
		tlsOnly, known := uriKnownOptions[name]
		if !known {
			return p.errorf("unknown option %s (known: %s)", p.q(name), uriKnownOptionList)
		}
		if !hasValue {
			return p.errorf("option %s has no value (want %s=value)", name, name)
		}
		value, ok := uriUnescape(rawValue)
		if !ok {
			return p.errorf("bad percent-encoding in the value of option %s", name)
		}
		if tlsOnly && !useTLS {
			return p.errorf("option %s is for TLS connections only: use amqps://", name)
		}
		if opts.seen[name] && name != "auth_mechanism" {
			return p.errorf("option %s given more than once", name)
		}
		opts.seen[name] = true
		if err := p.option(name, value, cfg, opts); err != nil {
			return err
		}
	}
	return nil
}

// option applies one validated option name and its decoded value.
func (p *uriParser) option(name, value string, cfg *Config, opts *uriOptions) error {
	switch name {
	case "heartbeat":
		n, ok := uriDecimal(value, 65535)
		if !ok {
			return p.errorf("option heartbeat=%s: want seconds 0..65535 (0 disables heartbeats)", p.q(value))
		}
		if n == 0 {
			cfg.Heartbeat = NoHeartbeat
		} else {
			cfg.Heartbeat = time.Duration(n) * time.Second
		}
	case "frame_max":
		n, ok := uriDecimal(value, 1<<32-1)
		if !ok || n < 4096 {
			return p.errorf("option frame_max=%s: want bytes 4096..4294967295", p.q(value))
		}
		cfg.FrameMax = uint32(n)
	case "channel_max":
		n, ok := uriDecimal(value, 65535)
		if !ok {
			return p.errorf("option channel_max=%s: want 0..65535 (0 means 65535)", p.q(value))
		}
		if n == 0 {
			n = 65535
		}
		cfg.ChannelMax = uint16(n)
	case "connection_timeout":
		n, ok := uriDecimal(value, 1<<31-1)
		if !ok || n == 0 {
			return p.errorf("option connection_timeout=%s: want milliseconds 1..2147483647", p.q(value))
		}
		cfg.DialTimeout = time.Duration(n) * time.Millisecond
	case "connection_name":
		cfg.ConnectionName = value
	case "auth_mechanism":
		for m := range strings.SplitSeq(value, ",") {
			upper := strings.ToUpper(strings.TrimSpace(m))
			switch upper {
			case "PLAIN", "AMQPLAIN", "EXTERNAL":
			case "":
				return p.errorf("option auth_mechanism has an empty entry; want plain, amqplain or external")
			default:
				return p.errorf("option auth_mechanism=%s: unknown mechanism; want plain, amqplain or external", p.q(m))
			}
			for _, prev := range opts.mechanisms {
				if prev == upper {
					return p.errorf("option auth_mechanism lists %s more than once", upper)
				}
			}
			opts.mechanisms = append(opts.mechanisms, upper)
		}
	case "shuffle_addrs":
		switch strings.ToLower(value) {
		case "true":
			cfg.ShuffleAddrs = true
		case "false":
			cfg.ShuffleAddrs = false
		default:
			return p.errorf("option shuffle_addrs=%s: want true or false", p.q(value))
		}
	case "cacertfile", "certfile", "keyfile":
		if value == "" {
			return p.errorf("option %s is empty; want a file path", name)
		}
		switch name {
		case "cacertfile":
			opts.cacertfile = value
		case "certfile":
			opts.certfile = value
		default:
			opts.keyfile = value
		}
	case "server_name_indication":
		switch value {
		case "":
			return p.errorf("option server_name_indication is empty; want a host name")
		case "disable":
			return p.errorf("option server_name_indication=disable is not supported; use verify=verify_none or a Config.TLS of your own")
		}
		opts.serverName = value
	case "verify":
		switch strings.ToLower(value) {
		case "verify_peer":
			opts.insecure = false
		case "verify_none":
			opts.insecure = true
		default:
			return p.errorf("option verify=%s: want verify_peer or verify_none", p.q(value))
		}
	}
	return nil
}

// RedactURL returns raw with its password replaced by "xxxxx", for logs.
// It works on malformed URLs too: when an '@' follows the host part (an
// unencoded '/', '?' or '#' may have cut the password off), it hides
// everything from the first ':' after the scheme up to the last '@', so a
// password never shows. A URL without a password is returned unchanged.
func RedactURL(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + 3
	}
	rest := raw[start:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndexByte(rest[:end], '@')
	if at < 0 {
		at = strings.LastIndexByte(rest, '@')
	}
	if at < 0 {
		return raw
	}
	colon := strings.IndexByte(rest[:at], ':')
	if colon < 0 || colon+1 == at {
		return raw
	}
	return raw[:start+colon+1] + "xxxxx" + raw[start+at:]
}

// validScheme reports whether s is an RFC 3986 scheme.
func validScheme(s string) bool {
	if s == "" || !uriIsAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !uriIsAlpha(c) && !uriIsDigit(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// firstInvalid returns the index and value of the first byte of s that is
// neither unreserved, a sub-delimiter, '%' nor in extra; -1 if none.
func firstInvalid(s, extra string) (int, byte) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case uriIsAlpha(c), uriIsDigit(c), strings.IndexByte("-._~!$&'()*+,;=%", c) >= 0:
		case strings.IndexByte(extra, c) >= 0:
		default:
			return i, c
		}
	}
	return -1, 0
}

// describeByte names a byte that is not allowed where it is, with its
// percent-encoding.
func describeByte(c byte) string {
	switch {
	case c == ' ':
		return "a space (write it %20)"
	case c < 0x20 || c == 0x7f:
		return fmt.Sprintf("the control character 0x%02X (write it %%%02X)", c, c)
	case c >= 0x80:
		return "a non-ASCII byte (percent-encode its UTF-8 bytes)"
	default:
		return fmt.Sprintf("an unencoded %q (write it %%%02X)", c, c)
	}
}

// uriUnescape percent-decodes s; '+' stays a plus. It reports false for a '%'
// not followed by two hex digits.
func uriUnescape(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := uriUnhex(s[i+1])
		lo, ok2 := uriUnhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), true
}

func uriUnhex(c byte) (byte, bool) {
	switch {
	case uriIsDigit(c):
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// uriDecimal parses a non-empty string of ASCII digits no greater than
// max.
func uriDecimal(s string, max uint64) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		if !uriIsDigit(s[i]) {
			return 0, false
		}
		n = n*10 + uint64(s[i]-'0')
		if n > max {
			return 0, false
		}
	}
	return n, true
}

// validHostName reports whether the decoded host h is a plausible host name
// or IPv4 address: letters, digits, '-', '.', '_' and UTF-8 beyond ASCII
// (internationalized names). The empty string is valid (localhost).
func validHostName(h string) bool {
	if !utf8.ValidString(h) {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !uriIsAlpha(c) && !uriIsDigit(c) && c != '-' && c != '.' && c != '_' && c < 0x80 {
			return false
		}
	}
	return true
}

func uriIsAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func uriIsDigit(c byte) bool { return '0' <= c && c <= '9' }
