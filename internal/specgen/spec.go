package main

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Sender bits, as in the generated wire.Sender type.
const (
	sentByClient = 1
	sentByServer = 2
)

// spec is the merged protocol description the code is generated from.
type spec struct {
	Major, Minor, Revision int

	FrameTypes   []constant // FRAME-METHOD, FRAME-HEADER, ...
	FrameMinSize int
	FrameEnd     int
	ReplyCodes   []constant // REPLY-SUCCESS and the soft and hard errors

	Classes    []*class // sorted by id
	Properties []*field // the basic class's content properties, in wire order
}

type constant struct {
	Name  string // as in the JSON: "NOT-FOUND"
	Value int
	Class string // "", "soft-error" or "hard-error"
	Doc   string // first sentence of the XML doc, if any
}

type class struct {
	Name    string
	ID      int
	Label   string
	Methods []*method // sorted by index
}

type method struct {
	Class     *class
	Name      string
	Index     int
	Label     string
	Sync      bool // JSON "synchronous": the method expects a reply
	Content   bool // JSON "content": the method is followed by a content header and body
	Fields    []*field
	Responses []*method
	SentBy    int    // sentByClient | sentByServer
	Erratum   string // why the facts differ from the XML, if they do
}

// FullName returns "class.method", the spec's own spelling.
func (m *method) FullName() string { return m.Class.Name + "." + m.Name }

type field struct {
	Name     string // JSON name: "consumer-tag", "nowait", "ticket"
	Type     string // wire type: octet short long longlong shortstr longstr bit table timestamp
	Label    string // from the XML field, or its domain
	XMLName  string // the XML's name, which differs for reserved fields ("reserved-1")
	Reserved bool
}

// JSON document (amqp-rabbitmq-0.9.1.json).

type jsonSpec struct {
	Major     int            `json:"major-version"`
	Minor     int            `json:"minor-version"`
	Revision  int            `json:"revision"`
	Domains   [][2]string    `json:"domains"`
	Constants []jsonConstant `json:"constants"`
	Classes   []jsonClass    `json:"classes"`
}

type jsonConstant struct {
	Name  string `json:"name"`
	Value int    `json:"value"`
	Class string `json:"class"`
}

type jsonClass struct {
	Name       string       `json:"name"`
	ID         int          `json:"id"`
	Methods    []jsonMethod `json:"methods"`
	Properties []jsonField  `json:"properties"`
}

type jsonMethod struct {
	Name        string      `json:"name"`
	ID          int         `json:"id"`
	Synchronous bool        `json:"synchronous"`
	Content     bool        `json:"content"`
	Arguments   []jsonField `json:"arguments"`
}

type jsonField struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Domain string `json:"domain"`
}

// XML document (amqp0-9-1.extended.xml).

type xmlSpec struct {
	Constants []xmlConstant `xml:"constant"`
	Domains   []xmlDomain   `xml:"domain"`
	Classes   []xmlClass    `xml:"class"`
}

type xmlConstant struct {
	Name  string   `xml:"name,attr"`
	Value string   `xml:"value,attr"`
	Class string   `xml:"class,attr"`
	Docs  []xmlDoc `xml:"doc"`
}

type xmlDoc struct {
	Type string `xml:"type,attr"`
	Text string `xml:",chardata"`
}

type xmlDomain struct {
	Name  string `xml:"name,attr"`
	Type  string `xml:"type,attr"`
	Label string `xml:"label,attr"`
}

type xmlClass struct {
	Name    string      `xml:"name,attr"`
	Index   string      `xml:"index,attr"`
	Label   string      `xml:"label,attr"`
	Methods []xmlMethod `xml:"method"`
	Fields  []xmlField  `xml:"field"`
}

type xmlMethod struct {
	Name      string       `xml:"name,attr"`
	Index     string       `xml:"index,attr"`
	Label     string       `xml:"label,attr"`
	Content   string       `xml:"content,attr"`
	Text      string       `xml:",chardata"` // confirm.select carries its label as text
	Docs      []xmlDoc     `xml:"doc"`
	Chassis   []xmlChassis `xml:"chassis"`
	Responses []xmlName    `xml:"response"`
	Fields    []xmlField   `xml:"field"`
}

type xmlChassis struct {
	Name string `xml:"name,attr"`
}

type xmlName struct {
	Name string `xml:"name,attr"`
}

type xmlField struct {
	Name     string `xml:"name,attr"`
	Domain   string `xml:"domain,attr"`
	Type     string `xml:"type,attr"`
	Label    string `xml:"label,attr"`
	Reserved string `xml:"reserved,attr"`
}

// erratum corrects a fact the extended XML gets wrong or leaves out. Each
// one must change what the XML says; load fails when one no longer does, so
// a corrected spec file retires its erratum.
type erratum struct {
	Method    string   // "class.method"
	Responses []string // method names in the same class; nil leaves the XML's
	SentBy    int      // 0 leaves the XML's
	Label     string   // "" leaves the XML's
	Why       string
}

var errata = []erratum{
	{
		Method: "access.request", Responses: []string{"request-ok"}, SentBy: sentByClient,
		Label: "request an access ticket",
		Why: "The 0-9-1 XML dropped the access class, which the JSON (and RabbitMQ) keep. " +
			"The client sends access.request and the server answers access.request-ok.",
	},
	{
		Method: "access.request-ok", SentBy: sentByServer, Label: "grant access to server resources",
		Why: "The 0-9-1 XML dropped the access class. The server sends access.request-ok.",
	},
	{
		Method: "basic.recover", Responses: []string{"recover-ok"},
		Why: "The XML omits basic.recover's <response> element, although the JSON marks it " +
			"synchronous and basic.recover-ok acknowledges it.",
	},
	{
		Method: "connection.update-secret", SentBy: sentByClient,
		Why: "The XML's chassis is reversed. The client sends connection.update-secret " +
			"to renew its credentials and the server answers connection.update-secret-ok.",
	},
	{
		Method: "connection.update-secret-ok", SentBy: sentByServer,
		Why: "The XML's chassis is reversed. The server sends connection.update-secret-ok.",
	},
	{
		Method: "connection.blocked", SentBy: sentByServer,
		Why: "The XML lists both chassis, but only the server sends RabbitMQ's " +
			"blocked-connection notifications.",
	},
	{
		Method: "connection.unblocked", SentBy: sentByServer,
		Why: "The XML lists both chassis, but only the server sends RabbitMQ's " +
			"blocked-connection notifications.",
	},
}

// load reads both spec files, merges them and checks that they agree.
func load(jsonPath, xmlPath string) (*spec, error) {
	jb, err := os.ReadFile(jsonPath)
	if err != nil {
		return nil, err
	}
	xb, err := os.ReadFile(xmlPath)
	if err != nil {
		return nil, err
	}
	var js jsonSpec
	if err := json.Unmarshal(jb, &js); err != nil {
		return nil, fmt.Errorf("%s: %w", jsonPath, err)
	}
	var xs xmlSpec
	if err := xml.Unmarshal(xb, &xs); err != nil {
		return nil, fmt.Errorf("%s: %w", xmlPath, err)
	}
	s, err := merge(&js, &xs)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", jsonPath, xmlPath, err)
	}
	return s, nil
}

var wireTypes = map[string]bool{
	"octet": true, "short": true, "long": true, "longlong": true, "shortstr": true,
	"longstr": true, "bit": true, "table": true, "timestamp": true,
}

func merge(js *jsonSpec, xs *xmlSpec) (*spec, error) {
	s := &spec{Major: js.Major, Minor: js.Minor, Revision: js.Revision}

	jsonDomains := map[string]string{}
	for _, d := range js.Domains {
		jsonDomains[d[0]] = d[1]
	}
	xmlDomains := map[string]xmlDomain{}
	for _, d := range xs.Domains {
		xmlDomains[d.Name] = d
	}

	// Constants.
	xmlConsts := map[string]xmlConstant{}
	for _, c := range xs.Constants {
		xmlConsts[strings.ToUpper(c.Name)] = c
	}
	for _, c := range js.Constants {
		k := constant{Name: c.Name, Value: c.Value, Class: c.Class}
		if xc, ok := xmlConsts[c.Name]; ok {
			if xc.Value != strconv.Itoa(c.Value) || xc.Class != c.Class {
				return nil, fmt.Errorf("constant %s: JSON says %d %q, XML says %s %q",
					c.Name, c.Value, c.Class, xc.Value, xc.Class)
			}
			k.Doc = firstSentence(docText(xc.Docs))
		}
		switch {
		case c.Name == "FRAME-MIN-SIZE":
			s.FrameMinSize = c.Value
		case c.Name == "FRAME-END":
			s.FrameEnd = c.Value
		case c.Name == "REPLY-SUCCESS" || c.Class == "soft-error" || c.Class == "hard-error":
			// Checked before the FRAME- prefix: FRAME-ERROR is a reply code.
			s.ReplyCodes = append(s.ReplyCodes, k)
		case strings.HasPrefix(c.Name, "FRAME-") && c.Class == "":
			if c.Value < 1 || c.Value > 255 {
				return nil, fmt.Errorf("frame type %s = %d does not fit an octet", c.Name, c.Value)
			}
			s.FrameTypes = append(s.FrameTypes, k)
		default:
			return nil, fmt.Errorf("constant %s (%d): do not know what it is", c.Name, c.Value)
		}
	}
	if s.FrameMinSize == 0 || s.FrameEnd == 0 || len(s.FrameTypes) == 0 || len(s.ReplyCodes) == 0 {
		return nil, fmt.Errorf("frame or reply-code constants missing")
	}
	slices.SortStableFunc(s.FrameTypes, func(a, b constant) int { return a.Value - b.Value })
	slices.SortStableFunc(s.ReplyCodes, func(a, b constant) int { return a.Value - b.Value })

	// Classes and methods.
	xmlClasses := map[string]*xmlClass{}
	for i := range xs.Classes {
		xmlClasses[xs.Classes[i].Name] = &xs.Classes[i]
	}
	byName := map[string]*method{}
	xmlOf := map[*method]*xmlMethod{}
	for _, jc := range js.Classes {
		c := &class{Name: jc.Name, ID: jc.ID}
		xc := xmlClasses[jc.Name]
		if xc != nil {
			if xc.Index != strconv.Itoa(jc.ID) {
				return nil, fmt.Errorf("class %s: JSON id %d, XML index %s", jc.Name, jc.ID, xc.Index)
			}
			c.Label = clean(xc.Label)
		}
		for _, jm := range jc.Methods {
			m := &method{Class: c, Name: jm.Name, Index: jm.ID, Sync: jm.Synchronous, Content: jm.Content}
			var xm *xmlMethod
			if xc != nil {
				for i := range xc.Methods {
					if xc.Methods[i].Name == jm.Name {
						xm = &xc.Methods[i]
					}
				}
			}
			if xm != nil {
				if xm.Index != strconv.Itoa(jm.ID) {
					return nil, fmt.Errorf("%s: JSON id %d, XML index %s", m.FullName(), jm.ID, xm.Index)
				}
				if (xm.Content == "1") != jm.Content {
					return nil, fmt.Errorf("%s: JSON and XML disagree on content", m.FullName())
				}
				m.Label = clean(xm.Label)
				if m.Label == "" {
					m.Label = clean(xm.Text)
				}
				if m.Label == "" {
					m.Label = firstSentence(docText(xm.Docs))
				}
				if len(xm.Fields) != len(jm.Arguments) {
					return nil, fmt.Errorf("%s: JSON has %d arguments, XML %d fields",
						m.FullName(), len(jm.Arguments), len(xm.Fields))
				}
				for _, ch := range xm.Chassis {
					switch ch.Name {
					case "server": // the server implements it: the client sends it
						m.SentBy |= sentByClient
					case "client":
						m.SentBy |= sentByServer
					default:
						return nil, fmt.Errorf("%s: unknown chassis %q", m.FullName(), ch.Name)
					}
				}
				xmlOf[m] = xm
			}
			for i, ja := range jm.Arguments {
				f := &field{Name: ja.Name, Type: ja.Type}
				if f.Type == "" {
					f.Type = jsonDomains[ja.Domain]
				}
				if !wireTypes[f.Type] {
					return nil, fmt.Errorf("%s %s: unknown type %q (domain %q)", m.FullName(), ja.Name, f.Type, ja.Domain)
				}
				if xm != nil {
					xf := xm.Fields[i]
					xt := xf.Type
					if xt == "" {
						xt = xmlDomains[xf.Domain].Type
					}
					if xt != f.Type {
						return nil, fmt.Errorf("%s field %d: JSON %s is %s, XML %s is %s",
							m.FullName(), i, ja.Name, f.Type, xf.Name, xt)
					}
					f.XMLName = xf.Name
					f.Reserved = xf.Reserved == "1"
					f.Label = clean(xf.Label)
					if f.Label == "" {
						f.Label = clean(xmlDomains[xf.Domain].Label)
					}
				}
				m.Fields = append(m.Fields, f)
			}
			if byName[m.FullName()] != nil {
				return nil, fmt.Errorf("%s defined twice", m.FullName())
			}
			byName[m.FullName()] = m
			c.Methods = append(c.Methods, m)
		}
		slices.SortFunc(c.Methods, func(a, b *method) int { return a.Index - b.Index })
		s.Classes = append(s.Classes, c)

		if jc.Name == "basic" {
			for i, jp := range jc.Properties {
				f := &field{Name: jp.Name, Type: jp.Type}
				if f.Type == "" {
					f.Type = jsonDomains[jp.Domain]
				}
				if !wireTypes[f.Type] || f.Type == "bit" {
					return nil, fmt.Errorf("basic property %s: bad type %q", jp.Name, f.Type)
				}
				if xc != nil && i < len(xc.Fields) {
					f.Label = clean(xc.Fields[i].Label)
					f.XMLName = xc.Fields[i].Name
				}
				s.Properties = append(s.Properties, f)
			}
			if xc != nil && len(xc.Fields) != len(jc.Properties) {
				return nil, fmt.Errorf("basic: JSON has %d properties, XML %d", len(jc.Properties), len(xc.Fields))
			}
		}
	}
	slices.SortFunc(s.Classes, func(a, b *class) int { return a.ID - b.ID })
	if len(s.Properties) == 0 || len(s.Properties) > 15 {
		return nil, fmt.Errorf("basic class: %d properties (want 1 to 15)", len(s.Properties))
	}
	for _, xc := range xs.Classes {
		var found bool
		for _, c := range s.Classes {
			found = found || c.Name == xc.Name
		}
		if !found {
			return nil, fmt.Errorf("XML class %s is not in the JSON", xc.Name)
		}
	}

	// Responses from the XML.
	for m, xm := range xmlOf {
		for _, r := range xm.Responses {
			rm := byName[m.Class.Name+"."+r.Name]
			if rm == nil {
				return nil, fmt.Errorf("%s: response %s not defined", m.FullName(), r.Name)
			}
			m.Responses = append(m.Responses, rm)
		}
	}

	// Errata.
	for _, e := range errata {
		m := byName[e.Method]
		if m == nil {
			return nil, fmt.Errorf("erratum for unknown method %s", e.Method)
		}
		changed := false
		if e.Responses != nil {
			var rs []*method
			for _, r := range e.Responses {
				rm := byName[m.Class.Name+"."+r]
				if rm == nil {
					return nil, fmt.Errorf("erratum %s: unknown response %s", e.Method, r)
				}
				rs = append(rs, rm)
			}
			changed = changed || !slices.Equal(rs, m.Responses)
			m.Responses = rs
		}
		if e.SentBy != 0 {
			changed = changed || e.SentBy != m.SentBy
			m.SentBy = e.SentBy
		}
		if e.Label != "" {
			changed = changed || e.Label != m.Label
			m.Label = e.Label
		}
		if !changed {
			return nil, fmt.Errorf("erratum for %s no longer changes anything; remove it", e.Method)
		}
		m.Erratum = e.Why
	}

	// Cross-checks.
	for _, c := range s.Classes {
		for _, m := range c.Methods {
			if m.SentBy == 0 {
				return nil, fmt.Errorf("%s: no sender (not in the XML and no erratum)", m.FullName())
			}
			if m.Sync != (len(m.Responses) > 0) {
				return nil, fmt.Errorf("%s: JSON synchronous=%v but %d responses", m.FullName(), m.Sync, len(m.Responses))
			}
			for _, r := range m.Responses {
				// Whoever may receive a request may send its response.
				if r.SentBy&receivers(m.SentBy) == 0 {
					return nil, fmt.Errorf("%s: response %s is not sent by its receiver", m.FullName(), r.FullName())
				}
			}
			if m.Label == "" {
				return nil, fmt.Errorf("%s: no label or doc in the XML", m.FullName())
			}
		}
	}
	return s, nil
}

// receivers returns the sides that receive a method sent by sentBy.
func receivers(sentBy int) int {
	r := 0
	if sentBy&sentByClient != 0 {
		r |= sentByServer
	}
	if sentBy&sentByServer != 0 {
		r |= sentByClient
	}
	return r
}

// docText returns the text of the first untyped doc element.
func docText(docs []xmlDoc) string {
	for _, d := range docs {
		if d.Type == "" {
			return d.Text
		}
	}
	return ""
}

// clean collapses runs of white space.
func clean(s string) string { return strings.Join(strings.Fields(s), " ") }

// firstSentence returns the first sentence of s, white space collapsed.
func firstSentence(s string) string {
	s = clean(s)
	if i := strings.Index(s, ". "); i >= 0 {
		s = s[:i+1]
	}
	return s
}
