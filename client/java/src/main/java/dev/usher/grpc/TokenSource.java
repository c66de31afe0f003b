package dev.usher.grpc;

import java.io.IOException;

/** Gives a current access token for one audience; implementations cache it. */
@FunctionalInterface
public interface TokenSource {
  AccessToken token() throws IOException;
}
