package replaystore

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Example is a replay store URL as the messages suggest it.
const Example = "redis://host:6379/0 (or rediss://host:6380/0 for TLS)"

// CheckURL reports why rawURL is not a replay store usher can use: it
// must be redis:// or rediss:// (TLS) with a host, an optional port, an
// optional database number as its path, and no query or fragment (usher
// sets the timeouts and the pool itself). Messages show the URL redacted.
func CheckURL(rawURL string) error {
	shown := Redact(rawURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		if _, _, hp := net.SplitHostPort(rawURL); hp == nil && !strings.ContainsAny(rawURL, "@/") {
			return fmt.Errorf("%q has no scheme: write it as redis://%s/0 (or rediss:// for TLS)", rawURL, rawURL)
		}
		if secretOf(rawURL) != nil {
			// url.Parse's errors quote the URL or a piece of it, which may be
			// a piece of the password that scrubbing would not recognise.
			return fmt.Errorf("%q is not a URL (the parser's message is not shown: it could show part of the password): characters such as @ : / %% # ? in a password must be percent-encoded (%%40 for @); write it as %s", shown, Example)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL
		}
		return fmt.Errorf("%q is not a URL (%s): write it as %s", shown, err, Example)
	}
	switch {
	case u.Scheme == "" || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Opaque != "" && !strings.Contains(rawURL, "://")):
		// "redis.internal:6379" parses as scheme "redis.internal".
		return fmt.Errorf("%q has no scheme: write it as redis://%s/0 (or rediss:// for TLS)", shown, strings.TrimSuffix(shown, "/"))
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return fmt.Errorf("%q: the scheme must be redis:// or rediss:// (TLS), Valkey's too, not %q: write it as %s", shown, u.Scheme+"://", Example)
	case u.Opaque != "" || u.Hostname() == "":
		return fmt.Errorf("%q has no host: write it as %s", shown, Example)
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("%q has query parameters, which usher does not read (it sets the store's timeouts and pool itself): remove everything from the ?", shown)
	case u.Fragment != "":
		return fmt.Errorf("%q has a fragment (#…): remove it", shown)
	}
	if _, err := redis.ParseURL(rawURL); err != nil {
		return fmt.Errorf("%q: %s: write it as %s", shown, secretOf(rawURL).scrub(strings.TrimPrefix(err.Error(), "redis: ")), Example)
	}
	return nil
}

// parse is CheckURL, then go-redis's options for rawURL and the URL's
// credentials.
func parse(rawURL string) (*redis.Options, secret, error) {
	sec := secretOf(rawURL)
	if err := CheckURL(rawURL); err != nil {
		return nil, sec, fmt.Errorf("replay store: %w", err)
	}
	ro, err := redis.ParseURL(rawURL)
	if err != nil { // CheckURL ran the same parse: not expected
		return nil, sec, fmt.Errorf("replay store %s: %s", Redact(rawURL), sec.scrub(err.Error()))
	}
	return ro, sec, nil
}

// Redact is rawURL with its password as "xxxxx" (and a user name without
// password too: some write the password there). A URL that does not parse
// has everything between "://" and the last "@" replaced.
func Redact(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		if u.User == nil {
			return rawURL
		}
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
		u.User = nil
		return strings.Replace(u.String(), "://", "://xxxxx@", 1)
	}
	info, start, ok := userinfo(rawURL)
	if !ok {
		return rawURL
	}
	return rawURL[:start] + "xxxxx" + rawURL[start+len(info):]
}

// userinfo finds what stands between "://" (or the start) and the last
// "@": the credentials, if any, taken broadly so as to hide too much
// rather than too little.
func userinfo(rawURL string) (info string, start int, ok bool) {
	if i := strings.Index(rawURL, "://"); i >= 0 {
		start = i + len("://")
	}
	at := strings.LastIndex(rawURL[start:], "@")
	if at < 0 {
		return "", 0, false
	}
	return rawURL[start : start+at], start, true
}

// secret is the credentials of a URL in every form an error could show
// them: as written, and decoded.
type secret []string

func secretOf(rawURL string) secret {
	info, _, ok := userinfo(rawURL)
	if !ok || info == "" {
		return nil
	}
	s := secret{info}
	user, pass, hasPass := strings.Cut(info, ":")
	for _, p := range []string{pass, user} {
		if p == "" || (p == user && hasPass) { // a user name next to a password is shown
			continue
		}
		s = append(s, p)
		if d, err := url.PathUnescape(p); err == nil && d != p {
			s = append(s, d)
		}
	}
	return s
}

// in reports whether msg shows any form of the credentials.
func (s secret) in(msg string) bool {
	for _, p := range s {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// scrub replaces every form of the credentials in msg with "xxxxx".
func (s secret) scrub(msg string) string {
	for _, p := range s {
		msg = strings.ReplaceAll(msg, p, "xxxxx")
	}
	return msg
}
