//! The OpenAPI 3.1 document of the device API, generated from [`Route`]
//! and the body types (their `utoipa::ToSchema` derives).

use http::{Method, StatusCode};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, Required, ResponseBuilder,
};

use crate::body::{
    CheckInRequest, CheckInResponse, ComponentOutcome, ComponentResult, ManifestAccepted,
    PackageOutcome, Report, ReportEvent, ReportPhase, ReportStored, SignedVehicleManifest,
};
use crate::error::{ErrorBody, ErrorCode};
use crate::route::Route;
use crate::{JSON, OCTET_STREAM};

fn http_method(m: &Method) -> HttpMethod {
    match *m {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::PATCH => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

fn string_schema(pattern: Option<&str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern.map(str::to_owned))
}

/// (request schema, success schema) names of a route; `None` = no JSON body.
fn bodies(route: Route) -> (Option<&'static str>, Option<&'static str>) {
    match route {
        Route::CheckIn => (Some("CheckInRequest"), Some("CheckInResponse")),
        Route::Manifest => (Some("SignedVehicleManifest"), Some("ManifestAccepted")),
        Route::DirectorFile | Route::ImageFile => (None, Some("SignedMetadata")),
        Route::Blob => (None, None),
        Route::Report => (Some("Report"), Some("ReportStored")),
    }
}

fn success_description(route: Route, status: StatusCode) -> &'static str {
    match (route, status) {
        (Route::Blob, StatusCode::PARTIAL_CONTENT) => "The requested range of the blob",
        (Route::Blob, _) => "The whole blob",
        (Route::Report, StatusCode::CREATED) => "Stored",
        (Route::Report, _) => "Already stored with this body (not counted again)",
        (Route::DirectorFile | Route::ImageFile, _) => "The metadata file, as signed",
        _ => "OK",
    }
}

/// The OpenAPI document of every route in [`Route::ALL`], with the body
/// schemas, the per-route statuses and the body caps (as
/// `x-max-request-body` / `x-max-response-body` extensions and in each
/// operation's description).
pub fn openapi() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for &route in Route::ALL {
        let (req, ok) = bodies(route);
        let mut op = OperationBuilder::new()
            .operation_id(Some(route.operation_id()))
            .summary(Some(route.summary()))
            .description(Some(format!(
                "Request body cap: {} bytes. Response body cap: {}. The vehicle is the one \
                 named by the client certificate (mutual TLS).",
                route.max_request_body(),
                match route.max_response_body() {
                    Some(n) => format!("{n} bytes"),
                    None => "the length in the verified target metadata".to_owned(),
                }
            )));
        if let Some(param) = route.param() {
            let pattern = match route {
                Route::Blob => Some("^[0-9a-f]{64}$"),
                Route::Report => Some("^[A-Za-z0-9_-]{8,64}$"),
                _ => Some("^[A-Za-z0-9_%-][A-Za-z0-9._%-]*\\.json$"),
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(param)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(string_schema(pattern))),
            );
        }
        if route == Route::Blob {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("Range")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some("`bytes=N-` to resume from byte N"))
                    .schema(Some(string_schema(Some("^bytes=[0-9]+-[0-9]*$")))),
            );
        }
        if let Some(req) = req {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        JSON,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(req)))
                            .build(),
                    )
                    .build(),
            ));
        }
        for &status in route.success_statuses() {
            let mut resp = ResponseBuilder::new().description(success_description(route, status));
            resp = match ok {
                Some(schema) => resp.content(
                    JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .build(),
                ),
                None => resp.content(
                    OCTET_STREAM,
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(
                            Some(utoipa::openapi::SchemaFormat::KnownFormat(
                                utoipa::openapi::KnownFormat::Binary,
                            )),
                        )))
                        .build(),
                ),
            };
            if route == Route::Blob {
                resp = resp.header("Cache-Control", HeaderBuilder::new().build());
                if status == StatusCode::PARTIAL_CONTENT {
                    resp = resp.header(
                        "Content-Range",
                        HeaderBuilder::new()
                            .description(Some("bytes FIRST-LAST/LENGTH"))
                            .build(),
                    );
                }
            }
            op = op.response(status.as_str(), resp.build());
        }
        let mut by_status: Vec<(StatusCode, Vec<ErrorCode>)> = Vec::new();
        for code in route.all_errors() {
            match by_status.iter_mut().find(|(s, _)| *s == code.status()) {
                Some((_, codes)) => codes.push(code),
                None => by_status.push((code.status(), vec![code])),
            }
        }
        by_status.sort_by_key(|(s, _)| s.as_u16());
        for (status, codes) in by_status {
            let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            op = op.response(
                status.as_str(),
                ResponseBuilder::new()
                    .description(format!("Error: {}", names.join(", ")))
                    .content(
                        JSON,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            );
        }
        paths = paths.path(
            route.template(),
            PathItem::new(http_method(&route.method()), op.build()),
        );
    }
    let signed_metadata = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "A TUF/Uptane metadata file: {\"signatures\": [...], \"signed\": {...}}, \
             verified by the Client (esync_uptane::repo)",
        ));
    let components = ComponentsBuilder::new()
        .schema_from::<CheckInRequest>()
        .schema_from::<CheckInResponse>()
        .schema_from::<SignedVehicleManifest>()
        .schema_from::<ManifestAccepted>()
        .schema_from::<Report>()
        .schema_from::<ReportEvent>()
        .schema_from::<ReportPhase>()
        .schema_from::<PackageOutcome>()
        .schema_from::<ComponentResult>()
        .schema_from::<ComponentOutcome>()
        .schema_from::<ReportStored>()
        .schema_from::<ErrorBody>()
        .schema_from::<ErrorCode>()
        .schema("SignedMetadata", signed_metadata)
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("esync-rs device API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Client↔Server API of esync-rs. Mutual TLS: the vehicle is the one \
                     named by its certificate, never by a body or a path.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}
