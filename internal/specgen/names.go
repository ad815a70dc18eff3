package main

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// words maps a lower-case word of a spec name to its Go spelling where plain
// capitalisation would be wrong (initialisms, and words the spec runs
// together).
var words = map[string]string{
	"id":     "ID",
	"nowait": "NoWait",
}

// goName turns a spec name ("consumer-tag", "get-ok", "class-id",
// "NOT-FOUND") into a Go identifier part ("ConsumerTag", "GetOk", "ClassID",
// "NotFound").
func goName(name string) string {
	var b strings.Builder
	for _, w := range strings.FieldsFunc(name, func(r rune) bool { return r == '-' || r == '_' || r == ' ' }) {
		w = strings.ToLower(w)
		if g, ok := words[w]; ok {
			b.WriteString(g)
			continue
		}
		r, n := utf8.DecodeRuneInString(w)
		b.WriteRune(unicode.ToUpper(r))
		b.WriteString(w[n:])
	}
	return b.String()
}

// structName is the Go type of a method: "BasicGetOk".
func (m *method) structName() string { return goName(m.Class.Name) + goName(m.Name) }

// constName is the MethodID constant of a method: "MethodBasicGetOk".
func (m *method) constName() string { return "Method" + m.structName() }

// goName is the Go field name of a field.
func (f *field) goName() string { return goName(f.Name) }

// classConst is the ClassID constant of a class: "ClassBasic".
func (c *class) constName() string { return "Class" + goName(c.Name) }

// replyName is the ReplyCode constant for a reply-code constant:
// "REPLY-SUCCESS" -> "ReplySuccess", "NOT-FOUND" -> "ReplyNotFound".
func replyName(c constant) string {
	n := goName(c.Name)
	if strings.HasPrefix(n, "Reply") {
		return n
	}
	return "Reply" + n
}

// wrap formats text as // comment lines of at most width columns, each
// starting with indent.
func wrap(indent, text string, width int) string {
	var b strings.Builder
	line := indent + "//"
	for _, w := range strings.Fields(text) {
		if len(line)+1+len(w) > width && line != indent+"//" {
			b.WriteString(line)
			b.WriteByte('\n')
			line = indent + "//"
		}
		line += " " + w
	}
	b.WriteString(line)
	b.WriteByte('\n')
	return b.String()
}

// sentence makes s start with an upper-case letter and end with a full stop.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// lowerFirst makes s start with a lower-case letter, unless it starts with
// an acronym ("MIME content type").
func lowerFirst(s string) string {
	if len(s) > 1 && unicode.IsUpper(rune(s[0])) && unicode.IsUpper(rune(s[1])) {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToLower(r)) + s[n:]
}
