// Types of @usher-dev/grpc (hand-written; the implementation is CommonJS in index.js and lib/).
import type {
  CallCredentials,
  ChannelCredentials,
  ChannelOptions,
  Client,
  Metadata,
  ServerInterceptor,
  ServiceError,
  status,
} from '@grpc/grpc-js';

/** The verified claims of a call's token, as usher's Claims message, in plain JavaScript. */
export interface UsherClaims {
  issuer: string;
  subject: string;
  audience: string[];
  scopes: string[];
  clientId: string;
  expiresAt: Date | null;
  issuedAt: Date | null;
  notBefore: Date | null;
  jwtId: string;
  keyId: string;
  algorithm: string;
  /** the typ header, e.g. "at+jwt" */
  tokenType: string;
  /** "jwt", or "opaque" for a token usher introspected */
  tokenFormat: string;
  /** every payload claim, as JSON values */
  raw: Record<string, unknown>;
  /** the token's cnf: { jkt } for a DPoP-bound token, { 'x5t#S256' } for a certificate-bound one; {} otherwise */
  confirmation: { jkt?: string; 'x5t#S256'?: string };
}

export interface VerdictCacheOptions {
  /** most entries kept (least recently used go first); default 10000 */
  maxEntries?: number;
  /** longest life of an entry in ms (a valid verdict never outlives the token's exp); default 60000 */
  maxTtlMs?: number;
  /** the cache's clock in ms since the epoch (tests); default the `now` option, else Date.now */
  now?: () => number;
}

export interface UsherInterceptorOptions {
  /** usher's gRPC address, e.g. "127.0.0.1:50051" or "dns:///usher.platform.svc:50051" (or pass client) */
  target?: string;
  /** channel credentials to reach usher (grpc.credentials.createSsl(...)); default plaintext */
  credentials?: ChannelCredentials;
  /** options of the channel to usher (override round_robin, retries of UNAVAILABLE, keepalive) */
  channelOptions?: ChannelOptions;
  /** an existing usher.v1.TokenService client (new (TokenService())(...)) instead of target; close() leaves it open */
  client?: Client;
  /** the audience this service answers to, from its own configuration (required; never read from a request) */
  audience: string;
  /** required scopes per full method name: { '/billing.v1.Invoices/Create': ['invoices.write'] } */
  scopes?: Record<string, string[]>;
  /** exact full method names let through without a token, besides DEFAULT_SKIP_METHODS */
  skip?: string[];
  /** how long one check may take before the call is refused UNAVAILABLE (ms, default 2000; the call's own deadline if earlier) */
  timeoutMs?: number;
  /** public edges: the reason only, no message, hint, audiences or error_description */
  terse?: boolean;
  /** the verdict cache's bounds, or false to ask usher on every call */
  cache?: VerdictCacheOptions | false;
  /** clock of the verdict cache in ms (tests); default Date.now */
  now?: () => number;
  /** whether the server's connections have TLS, for a DPoP proof's htu (https or http); default: detected */
  tls?: boolean;
}

export interface CacheStats {
  hits: number;
  misses: number;
  size: number;
}

/** grpc-js ServerInterceptor with its Authenticator's controls. */
export interface UsherServerInterceptor extends ServerInterceptor {
  authenticator: Authenticator;
  cacheStats(): CacheStats;
  /** closes the connection to usher when the interceptor opened it */
  close(): void;
}

export declare class Authenticator {
  constructor(options: UsherInterceptorOptions);
  readonly audience: string;
  /** the grpc-js ServerInterceptor (bound) */
  interceptor: ServerInterceptor;
  cacheStats(): CacheStats;
  close(): void;
}

/** new grpc.Server({ interceptors: [usherInterceptor({ target, audience })] }) */
export declare function usherInterceptor(options: UsherInterceptorOptions): UsherServerInterceptor;

/** The verified claims of a call the interceptor let through (pass the handler's call, or its call.metadata). */
export declare function claimsOf(callOrMetadata: { metadata: Metadata } | Metadata): UsherClaims | undefined;

/** Makes repeated authorization/dpop headers visible to the interceptor (Node's HTTP/2 keeps only the first authorization); call in bindAsync's callback. */
export declare function guardRepeatedHeaders<S>(server: S): S;

export interface Token {
  accessToken: string;
  tokenType: string;
  /** ms since the epoch, or null when the issuer gave no expires_in */
  expiresAt: number | null;
}

export interface TokenSource {
  token(): Promise<Token>;
}

export interface ClientCredentialsConfig {
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  /** scopes to ask for (space-separated string or array) */
  scope?: string | string[];
  /** further form parameters of the token request */
  params?: Record<string, string>;
  /** client_secret_basic (default) or client_secret_post */
  authStyle?: 'basic' | 'post';
  /** default globalThis.fetch */
  fetch?: typeof fetch;
  /** clock in ms (tests); default Date.now */
  now?: () => number;
  /** refresh this long before the token expires (ms, default 10000) */
  refreshBeforeMs?: number;
  /** bound of one token request (ms, default 10000) */
  timeoutMs?: number;
}

export declare class ClientCredentialsSource implements TokenSource {
  constructor(config: ClientCredentialsConfig, audience: string);
  readonly audience: string;
  token(): Promise<Token>;
}

/** One cached client-credentials token source per audience. */
export declare function clientCredentialsSources(config: ClientCredentialsConfig, audiences: string[]): Record<string, ClientCredentialsSource>;

/** audienceFor from a map of service names or full method names to audiences (a method's entry wins). */
export declare function serviceAudiences(map: Record<string, string>): (fullMethod: string) => string;

export interface AudienceCredentialsOptions {
  /** { 'billing.v1.Invoices': 'api/invoices', '/users.v1.Users/Get': 'api/users' } */
  audiences?: Record<string, string>;
  /** instead of audiences: the audience of a full method name */
  audienceFor?: (fullMethod: string) => string | Promise<string>;
  /** audience -> token source */
  sources?: Record<string, TokenSource>;
  /** instead of sources: one client-credentials source per audience of `audiences` */
  clientCredentials?: ClientCredentialsConfig;
}

/** Call credentials sending each API a token for its own audience. */
export declare function audienceCredentials(options: AudienceCredentialsOptions): CallCredentials;

export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

export interface StatusDetails {
  code: status | number;
  message: string;
  errorInfo: ErrorInfo | null;
  details: { typeUrl: string; value: Buffer }[];
}

/** Decodes grpc-status-details-bin from an error of a grpc-js call, its Metadata, or the bytes. */
export declare function decodeStatusDetails(source: ServiceError | Metadata | Uint8Array): StatusDetails | null;

/** The usher.v1.TokenService client constructor (loaded from the shipped usher.proto). */
export declare function TokenService(): typeof Client;

export declare const DEFAULT_SKIP_METHODS: readonly string[];
/** "usher.v1", the domain of every ErrorInfo */
export declare const ERROR_DOMAIN: string;

export interface ReasonRule {
  code: status;
  grpcCode: string;
  httpStatus: number;
  bearerError: string;
  cacheable: boolean;
  retryable: boolean;
  challenge: string;
}

/** reasons.json: reason name (REASON_…) -> rule */
export declare const REASON_RULES: Readonly<Record<string, ReasonRule>>;
/** the rule of a reason the table does not know: UNAVAILABLE */
export declare const UNKNOWN_REASON_RULE: ReasonRule;
/** the proof algorithms of a DPoP challenge */
export declare const DPOP_ALGS: string;
