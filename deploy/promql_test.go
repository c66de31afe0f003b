package deploy_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A reader of the PromQL the dashboard uses, enough to list what a query
// names: its metrics with the labels it matches on, and the labels it
// groups by. Strings, range selectors and Grafana's $variables are skipped;
// a function or keyword it does not know is an error, so that a misspelt
// name cannot pass for a metric.

type selector struct {
	name   string
	labels []string
}

func (s selector) String() string { return s.name }

type promQuery struct {
	metrics  []selector
	grouping []string // by, without, on, ignoring, group_left, group_right
}

// promFunctions are PromQL's functions and aggregation operators used, or
// likely to be used, in a dashboard.
var promFunctions = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "topk": true, "bottomk": true, "quantile": true,
	"stddev": true, "stdvar": true, "group": true, "count_values": true,
	"rate": true, "irate": true, "increase": true, "delta": true, "idelta": true, "deriv": true, "changes": true, "resets": true,
	"histogram_quantile": true, "clamp_min": true, "clamp_max": true, "clamp": true, "abs": true, "round": true, "ceil": true,
	"floor": true, "sqrt": true, "exp": true, "ln": true, "log2": true, "log10": true, "time": true, "timestamp": true,
	"vector": true, "scalar": true, "absent": true, "sort": true, "sort_desc": true, "label_replace": true, "label_join": true,
	"avg_over_time": true, "min_over_time": true, "max_over_time": true, "sum_over_time": true, "count_over_time": true,
	"last_over_time": true, "quantile_over_time": true,
}

// promGrouping are the keywords followed by a list of label names.
var promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// promOperators are the keywords that are binary operators or modifiers.
var promOperators = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}

func parsePromQL(expr string) (promQuery, error) {
	var q promQuery
	s := expr
	for i := 0; i < len(s); {
		c := s[i]
		var err error
		switch {
		case c == '"' || c == '\'' || c == '`':
			i, err = skipString(s, i)
		case c == '[':
			i, err = skipPast(s, i, ']')
		case c == '{':
			return q, errors.New("a selector without a metric name")
		case c == '$':
			i = skipVariable(s, i)
		case c >= '0' && c <= '9' || c == '.':
			i = skipNumber(s, i)
		case identStart(c):
			i, err = q.word(s, i)
		default:
			i++
		}
		if err != nil {
			return q, err
		}
	}
	return q, nil
}

// word reads the identifier at i: a keyword, a function or a metric.
func (q *promQuery) word(s string, i int) (int, error) {
	j := i
	for j < len(s) && identPart(s[j]) {
		j++
	}
	w := s[i:j]
	k := skipSpace(s, j)
	switch {
	case promGrouping[w]:
		if k >= len(s) || s[k] != '(' {
			return j, nil // group_left without labels
		}
		labels, end, err := labelList(s, k)
		q.grouping = append(q.grouping, labels...)
		return end, err
	case promOperators[w], promFunctions[w]:
		return j, nil
	case k < len(s) && s[k] == '(':
		return j, fmt.Errorf("unknown function %s", w)
	}
	sel := selector{name: w}
	if k < len(s) && s[k] == '{' {
		labels, end, err := matchers(s, k)
		if err != nil {
			return end, fmt.Errorf("%s: %w", w, err)
		}
		sel.labels, j = labels, end
	}
	q.metrics = append(q.metrics, sel)
	return j, nil
}

// labelList reads "(a, b)" at i.
func labelList(s string, i int) ([]string, int, error) {
	end := strings.IndexByte(s[i:], ')')
	if end < 0 {
		return nil, len(s), errors.New("an unclosed label list")
	}
	var out []string
	for _, l := range strings.Split(s[i+1:i+end], ",") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if !identStart(l[0]) || strings.IndexFunc(l, func(r rune) bool { return r > 0x7f || !identPart(byte(r)) }) >= 0 {
			return nil, i + end + 1, fmt.Errorf("%q is not a label name", l)
		}
		out = append(out, l)
	}
	return out, i + end + 1, nil
}

// matchers reads `{l="v", m=~"w"}` at i and returns the label names.
func matchers(s string, i int) ([]string, int, error) {
	var labels []string
	i++
	for {
		i = skipSpace(s, i)
		if i < len(s) && s[i] == '}' {
			return labels, i + 1, nil
		}
		j := i
		for j < len(s) && identPart(s[j]) {
			j++
		}
		if j == i {
			return nil, j, fmt.Errorf("a label matcher without a label name at %q", s[i:])
		}
		labels = append(labels, s[i:j])
		j = skipSpace(s, j)
		for j < len(s) && strings.IndexByte("=!~", s[j]) >= 0 {
			j++
		}
		j = skipSpace(s, j)
		if j >= len(s) || (s[j] != '"' && s[j] != '\'' && s[j] != '`') {
			return nil, j, errors.New("a label matcher without a quoted value")
		}
		end, err := skipString(s, j)
		if err != nil {
			return nil, end, err
		}
		i = skipSpace(s, end)
		if i < len(s) && s[i] == ',' {
			i++
		}
	}
}

func skipString(s string, i int) (int, error) {
	quote := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && quote != '`':
			j++
		case s[j] == quote:
			return j + 1, nil
		}
	}
	return len(s), errors.New("an unclosed string")
}

func skipPast(s string, i int, c byte) (int, error) {
	end := strings.IndexByte(s[i:], c)
	if end < 0 {
		return len(s), fmt.Errorf("no closing %c", c)
	}
	return i + end + 1, nil
}

// skipVariable skips a Grafana variable: $name or ${name}.
func skipVariable(s string, i int) int {
	i++
	if i < len(s) && s[i] == '{' {
		if end := strings.IndexByte(s[i:], '}'); end >= 0 {
			return i + end + 1
		}
		return len(s)
	}
	for i < len(s) && identPart(s[i]) {
		i++
	}
	return i
}

// skipNumber skips a number, with a duration's unit or an exponent.
func skipNumber(s string, i int) int {
	for i < len(s) && (identPart(s[i]) || s[i] == '.') {
		i++
	}
	return i
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
		i++
	}
	return i
}

func identStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func identPart(c byte) bool { return identStart(c) || c >= '0' && c <= '9' }

// The reader finds what a query names, and refuses what it cannot read.
func TestParsePromQL(t *testing.T) {
	q, err := parsePromQL(`histogram_quantile(0.99, sum by (le, issuer) (rate(usher_x_bucket{job=~"$job", issuer!="a,b}"}[$__rate_interval]))) / on (issuer) group_left usher_y offset 5m > bool 1e3`)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(q.metrics, q.metrics[0].labels, q.grouping); got != "[usher_x_bucket usher_y] [job issuer] [le issuer issuer]" {
		t.Errorf("got %s", got)
	}
	for _, bad := range []string{`sum(rte(usher_x[5m]))`, `{__name__="usher_x"}`, `usher_x{job="a}`, `usher_x{job}`, `sum by (le (usher_x)`} {
		if q, err := parsePromQL(bad); err == nil {
			t.Errorf("%s: read as %v, want an error", bad, q.metrics)
		}
	}
}
