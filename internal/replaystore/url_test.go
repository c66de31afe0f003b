package replaystore_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/usher-dev/usher/internal/replaystore"
)

// CheckURL accepts redis:// and rediss:// URLs with a host, and refuses
// anything else with a message that says what to write.
func TestCheckURL(t *testing.T) {
	for _, u := range []string{
		"redis://127.0.0.1",
		"redis://redis.internal:6379/0",
		"rediss://redis.internal:6380/3",
		"redis://:pw@127.0.0.1:6379/0",
		"redis://usher:pw@[::1]:6379/",
		"REDIS://Redis.Internal:6379",
	} {
		if err := replaystore.CheckURL(u); err != nil {
			t.Errorf("CheckURL(%q) = %v, want nil", u, err)
		}
	}
	for u, want := range map[string]string{
		"":                            "has no scheme",
		"redis.internal":              "has no scheme",
		"127.0.0.1:6379":              "write it as redis://127.0.0.1:6379/0",
		"http://127.0.0.1:6379":       `not "http://"`,
		"unix:///run/redis.sock":      `not "unix://"`,
		"redis://":                    "has no host",
		"redis:///0":                  "has no host",
		"redis:127.0.0.1":             "has no host",
		"redis.internal:6379":         "write it as redis://redis.internal:6379/0",
		"redis://127.0.0.1:port/0":    "is not a URL",
		"redis://127.0.0.1/zero":      "invalid database number",
		"redis://127.0.0.1/0/1":       "invalid URL path",
		"redis://127.0.0.1/0?db=1":    "query parameters",
		"redis://127.0.0.1/0?":        "query parameters",
		"redis://127.0.0.1/0#primary": "fragment",
	} {
		err := replaystore.CheckURL(u)
		if err == nil {
			t.Errorf("CheckURL(%q) = nil, want an error with %q", u, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckURL(%q) = %v\nwant it to contain %q", u, err, want)
		}
		if !strings.Contains(err.Error(), "redis://") {
			t.Errorf("CheckURL(%q) = %v\nwant it to show how to write the URL", u, err)
		}
	}
}

// No message shows a password, not even part of one: not when the URL is
// refused (url.Parse's own error repeats the whole URL), not in Redact.
func TestCheckURL_NeverShowsThePassword(t *testing.T) {
	const pw = "Pa55w0rd-s3cret"
	for _, u := range []string{
		"redis://:" + pw + "%zz@127.0.0.1/0", // a bad percent-escape in the password
		"redis://:" + pw + "@127.0.0.1:port/0",
		"redis://:" + pw + "@127.0.0.1/zero",
		"redis://:" + pw + "@127.0.0.1/0?dial_timeout=1s",
		"http://:" + pw + "@127.0.0.1/0",
		"redis://" + pw + "@127.0.0.1:x/0", // the password where the user name goes
		"redis://us%zzer:" + pw + "@127.0.0.1/0",
		"redis://:" + pw + "/@127.0.0.1/0", // an unescaped / in the password
	} {
		err := replaystore.CheckURL(u)
		if err == nil {
			t.Errorf("CheckURL(%q) = nil, want an error", u)
			continue
		}
		_, newErr := replaystore.New(u)
		for what, msg := range map[string]string{"CheckURL": err.Error(), "New": fmt.Sprint(newErr), "Redact": replaystore.Redact(u)} {
			if strings.Contains(msg, pw[:6]) || strings.Contains(msg, "%zz") {
				t.Errorf("%s(%q) shows the password: %s", what, u, msg)
			}
			if !strings.Contains(msg, "xxxxx") {
				t.Errorf("%s(%q) = %s, want the credentials shown as xxxxx", what, u, msg)
			}
		}
	}
	if err := replaystore.CheckURL("redis://:" + pw + "%zz@127.0.0.1/0"); !strings.Contains(err.Error(), "percent-encoded") {
		t.Errorf("a bad escape in the password: %v\nwant a hint that such characters must be percent-encoded", err)
	}
	for u, want := range map[string]string{
		"redis://:" + pw + "@127.0.0.1:6379/0":      "redis://:xxxxx@127.0.0.1:6379/0",
		"redis://usher:" + pw + "@127.0.0.1:6379/0": "redis://usher:xxxxx@127.0.0.1:6379/0",
		"redis://" + pw + "@127.0.0.1:6379/0":       "redis://xxxxx@127.0.0.1:6379/0",
		"rediss://127.0.0.1:6380/0":                 "rediss://127.0.0.1:6380/0",
	} {
		if got := replaystore.Redact(u); got != want {
			t.Errorf("Redact(%q) = %q, want %q", u, got, want)
		}
	}
}
