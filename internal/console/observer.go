package console

import "github.com/usher-dev/usher/service"

// Observer returns the observer to give the engine (service.WithObserver)
// so that the recorder sees every verdict that next (the Prometheus
// metrics; nil for none) sees. Events of an IntrospectionObserver are passed
// on to next when it is one.
func (r *Recorder) Observer(next service.Observer) service.Observer {
	if next == nil {
		return r
	}
	return tee{r: r, next: next}
}

// tee tells the recorder and then next about every verdict.
type tee struct {
	r    *Recorder
	next service.Observer
}

var (
	_ service.Observer              = tee{}
	_ service.IntrospectionObserver = tee{}
)

func (t tee) ObserveVerdict(ev service.VerdictEvent) {
	t.r.ObserveVerdict(ev)
	t.next.ObserveVerdict(ev)
}

func (t tee) ObserveIntrospection(ev service.IntrospectionEvent) {
	if io, ok := t.next.(service.IntrospectionObserver); ok {
		io.ObserveIntrospection(ev)
	}
}

func (t tee) ObserveIntrospectionLookup(ev service.IntrospectionLookup) {
	if io, ok := t.next.(service.IntrospectionObserver); ok {
		io.ObserveIntrospectionLookup(ev)
	}
}
