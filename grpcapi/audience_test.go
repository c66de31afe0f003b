package grpcapi_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// A blank expected_audience is a caller's bug, like an empty one: refused
// with INVALID_ARGUMENT, even for a token whose aud is as blank.
func TestServer_BlankExpectedAudience(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	c := usherv1.NewTokenServiceClient(serve(t, ctx, v))
	for name, aud := range map[string]string{"empty": "", "one space": " ", "tab and newline": "\t\n", "no-break space": "\u00a0", "many spaces": strings.Repeat(" ", 100)} {
		t.Run(name, func(t *testing.T) {
			tok := k.Token(t, testkit.Claims(ti.URL(), "aud", aud))
			_, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: aud})
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(msg, "expected_audience is ") || !strings.Contains(msg, "usher never skips the audience check") {
				t.Fatalf("error %v, want InvalidArgument naming expected_audience", err)
			}
		})
	}
}
