package service

import "testing"

// htu and the request's URI are compared after RFC 3986 §6.2.2 and §6.2.3
// normalization, without query and fragment.
func TestNormalURI(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"https://api.example.com/invoices", "https://api.example.com/invoices"},
		{"HTTPS://API.Example.COM/invoices", "https://api.example.com/invoices"},
		{"https://api.example.com:443/invoices", "https://api.example.com/invoices"},
		{"http://api.example.com:80/invoices", "http://api.example.com/invoices"},
		{"https://api.example.com:/invoices", "https://api.example.com/invoices"},
		{"https://api.example.com:8443/invoices", "https://api.example.com:8443/invoices"},
		{"http://api.example.com:443/invoices", "http://api.example.com:443/invoices"},
		{"https://api.example.com", "https://api.example.com/"},
		{"https://api.example.com?x=1", "https://api.example.com/"},
		{"https://api.example.com/invoices?page=2#top", "https://api.example.com/invoices"},
		{"https://api.example.com/in%76oices", "https://api.example.com/invoices"},
		{"https://api.example.com/a%2fb", "https://api.example.com/a%2Fb"},
		{"https://api.example.com/%7Euser", "https://api.example.com/~user"},
		{"https://api.example.com/a/./b/../c", "https://api.example.com/a/c"},
		{"https://api.example.com/a/b/c/./../../g", "https://api.example.com/a/g"},
		{"https://api.example.com/../../x", "https://api.example.com/x"},
		{"https://api.example.com/a/..", "https://api.example.com/"},
		{"https://[::1]:443/x", "https://[::1]/x"},
		{"https://[::1]:8443/x", "https://[::1]:8443/x"},
		{"https://127.0.0.1:8443/usher.v1.TokenService/ValidateToken", "https://127.0.0.1:8443/usher.v1.TokenService/ValidateToken"},
	} {
		got, why := normalURI(c.in)
		if got != c.want || why != "" {
			t.Errorf("normalURI(%q) = %q, %q; want %q", c.in, got, why, c.want)
		}
	}
	for _, in := range []string{"", "/invoices", "api.example.com/invoices", "ftp://api.example.com/x", "https:///x", "https://user:pw@api.example.com/x", "https://api.example.com/%zz", "mailto:a@b"} {
		if got, why := normalURI(in); got != "" || why == "" {
			t.Errorf("normalURI(%q) = %q, %q; want it refused", in, got, why)
		}
	}
	// Different URIs stay different.
	for _, pair := range [][2]string{
		{"https://api.example.com/invoices", "https://api.example.com/Invoices"},
		{"https://api.example.com/invoices", "http://api.example.com/invoices"},
		{"https://api.example.com/invoices", "https://api.example.com/invoices/"},
		{"https://api.example.com/a%2Fb", "https://api.example.com/a/b"},
		{"https://api.example.com/invoices", "https://api.example.com:8443/invoices"},
	} {
		a, _ := normalURI(pair[0])
		b, _ := normalURI(pair[1])
		if a == b {
			t.Errorf("%q and %q both normalize to %q", pair[0], pair[1], a)
		}
	}
}

// RFC 3986 §5.4's examples of dot segments.
func TestRemoveDotSegments(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/a/b/c/./../../g", "/a/g"}, {"mid/content=5/../6", "mid/6"}, {"/./a", "/a"}, {"/a/.", "/a/"},
		{"/a/..", "/"}, {"/..", "/"}, {".", ""}, {"..", ""}, {"/a/b/..c", "/a/b/..c"}, {"/a/.b", "/a/.b"},
	} {
		if got := removeDotSegments(c.in); got != c.want {
			t.Errorf("removeDotSegments(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// The memory replay store takes over across a reload (WithPrevious), so
// that a proof seen before the reload is not accepted again after it.
func TestReplayStoreCarriedOnReload(t *testing.T) {
	old := &Validator{replay: NewMemoryReplayStore(10, nil)}
	o := options{previous: old}
	if got := replayStore(&o, 20); got != old.replay {
		t.Fatal("a reload started a new replay cache: proofs seen before it could be replayed")
	}
	if m := old.replay.(*MemoryReplayStore); m.max != 20 {
		t.Fatalf("bound %d, want the new config's 20", m.max)
	}
	given := NewMemoryReplayStore(1, nil)
	o.replay = given
	if got := replayStore(&o, 20); got != given {
		t.Fatal("WithReplayStore's store not used")
	}
}
