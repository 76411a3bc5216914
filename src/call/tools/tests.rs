//! Unit tests of the tools.

use super::*;

fn http_tool(name: &str) -> HttpTool {
    HttpTool {
        name: name.to_owned(),
        description: "Look up an order.".to_owned(),
        parameters: json!({"type": "object", "properties": {"order": {"type": "string"}}}),
        url: "https://user:pw@tools.example.com:8443/order?key=s3cret".to_owned(),
        timeout: Duration::from_secs(5),
        headers: vec![("Authorization".to_owned(), "Bearer s3cret".to_owned())],
    }
}

fn targets() -> TransferPolicy {
    TransferPolicy {
        targets: vec![
            TransferTarget {
                name: "sales".to_owned(),
                uri: "sip:sales@pbx.example.com".to_owned(),
            },
            TransferTarget {
                name: "Support".to_owned(),
                uri: "sip:200@pbx.example.com".to_owned(),
            },
        ],
        allow_any: false,
    }
}

fn all_tools() -> AgentTools {
    AgentTools::new(true, Some(targets()), true, vec![http_tool("lookup_order")]).expect("valid")
}

fn names(specs: &[ToolSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn specs_list_builtins_first_then_http_tools() {
    let specs = all_tools().specs();
    assert_eq!(
        names(&specs),
        ["hang_up", "transfer_call", "send_dtmf", "lookup_order"]
    );
    assert_eq!(
        specs[0].description,
        "End the call. Say a short goodbye before calling this."
    );
    assert_eq!(
        specs[0].parameters["properties"]["reason"]["type"],
        "string"
    );
    assert_eq!(specs[0].parameters["required"], json!([]));
    assert_eq!(specs[2].parameters["required"], json!(["digits"]));
    assert_eq!(specs[3].description, "Look up an order.");
    assert_eq!(specs[3].parameters, http_tool("x").parameters);
}

#[test]
fn disabled_builtins_are_not_declared() {
    let tools = AgentTools {
        http: vec![http_tool("a")],
        ..AgentTools::default()
    };
    assert_eq!(names(&tools.specs()), ["a"]);
    assert!(AgentTools::default().specs().is_empty());
}

#[test]
fn transfer_schema_enumerates_the_allow_list() {
    let tools = AgentTools {
        transfer: Some(targets()),
        ..AgentTools::default()
    };
    let spec = &tools.specs()[0];
    assert_eq!(spec.name, TRANSFER_CALL);
    assert_eq!(
        spec.parameters["properties"]["target"]["enum"],
        json!(["sales", "Support"])
    );
    assert_eq!(spec.parameters["required"], json!(["target"]));
    assert!(
        spec.description.contains(
            "\"sales\" (sip:sales@pbx.example.com), \"Support\" (sip:200@pbx.example.com)"
        ),
        "{}",
        spec.description
    );
}

#[test]
fn transfer_without_allow_list() {
    let any = AgentTools {
        transfer: Some(TransferPolicy {
            targets: vec![],
            allow_any: true,
        }),
        ..AgentTools::default()
    };
    let spec = &any.specs()[0];
    assert!(
        spec.parameters["properties"]["target"]
            .get("enum")
            .is_none()
    );
    assert_eq!(
        parse_request(&any, TRANSFER_CALL, &json!({"target": " +15551234567 "})),
        Ok(ToolRequest::Transfer {
            uri: "+15551234567".to_owned()
        })
    );
    assert!(matches!(
        parse_request(&any, TRANSFER_CALL, &json!({"target": "sip:a@b>\r\nX: y"})),
        Err(ToolError::InvalidArguments { .. })
    ));
    let long = "1".repeat(MAX_TRANSFER_TARGET_LEN + 1);
    assert!(matches!(
        parse_request(&any, TRANSFER_CALL, &json!({ "target": long })),
        Err(ToolError::InvalidArguments { .. })
    ));

    // Empty allow-list and no free targets: the tool is not offered at all.
    let none = AgentTools {
        transfer: Some(TransferPolicy::default()),
        ..AgentTools::default()
    };
    assert!(none.specs().is_empty());
    assert_eq!(
        parse_request(&none, TRANSFER_CALL, &json!({"target": "sip:x@y"})),
        Ok(ToolRequest::Unknown(TRANSFER_CALL.to_owned()))
    );
}

#[test]
fn transfer_by_label_or_uri_within_the_allow_list() {
    let tools = all_tools();
    assert_eq!(
        parse_request(&tools, TRANSFER_CALL, &json!({"target": "sales"})),
        Ok(ToolRequest::Transfer {
            uri: "sip:sales@pbx.example.com".to_owned()
        })
    );
    assert_eq!(
        parse_request(&tools, TRANSFER_CALL, &json!({"target": "support"})),
        Ok(ToolRequest::Transfer {
            uri: "sip:200@pbx.example.com".to_owned()
        })
    );
    assert_eq!(
        parse_request(
            &tools,
            TRANSFER_CALL,
            &json!({"target": "sip:200@pbx.example.com"})
        ),
        Ok(ToolRequest::Transfer {
            uri: "sip:200@pbx.example.com".to_owned()
        })
    );
    let err = parse_request(&tools, TRANSFER_CALL, &json!({"target": "sip:evil@x"}))
        .expect_err("not allowed");
    assert_eq!(
        err,
        ToolError::NotAllowed {
            target: "sip:evil@x".to_owned(),
            allowed: vec!["sales".to_owned(), "Support".to_owned()],
        }
    );
    assert_eq!(
        err.to_output(),
        r#"{"error":"transfer target \"sip:evil@x\" is not allowed; allowed targets: sales, Support"}"#
    );
    assert!(matches!(
        parse_request(&tools, TRANSFER_CALL, &json!({})),
        Err(ToolError::InvalidArguments { .. })
    ));
    assert!(matches!(
        parse_request(&tools, TRANSFER_CALL, &json!({"target": 5})),
        Err(ToolError::InvalidArguments { .. })
    ));
}

#[test]
fn hang_up_reasons() {
    let tools = all_tools();
    assert_eq!(
        parse_request(&tools, HANG_UP, &json!({})),
        Ok(ToolRequest::HangUp { reason: None })
    );
    assert_eq!(
        parse_request(&tools, HANG_UP, &Value::Null),
        Ok(ToolRequest::HangUp { reason: None })
    );
    assert_eq!(
        parse_request(&tools, HANG_UP, &json!({"reason": " caller said bye "})),
        Ok(ToolRequest::HangUp {
            reason: Some("caller said bye".to_owned())
        })
    );
    assert_eq!(
        parse_request(&tools, HANG_UP, &json!({"reason": ""})),
        Ok(ToolRequest::HangUp { reason: None })
    );
    assert_eq!(
        parse_request(&tools, HANG_UP, &json!({"reason": 42})),
        Ok(ToolRequest::HangUp {
            reason: Some("42".to_owned())
        })
    );
    let long = "é".repeat(MAX_REASON_LEN);
    match parse_request(&tools, HANG_UP, &json!({ "reason": long })) {
        Ok(ToolRequest::HangUp { reason: Some(r) }) => {
            assert_eq!(r.len(), MAX_REASON_LEN);
            assert!(r.chars().all(|c| c == 'é'));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn arguments_as_a_json_string_are_accepted() {
    let tools = all_tools();
    assert_eq!(
        parse_request(&tools, SEND_DTMF, &json!("{\"digits\": \"12#\"}")),
        Ok(ToolRequest::SendDtmf {
            digits: vec![Digit::D1, Digit::D2, Digit::Hash]
        })
    );
    assert_eq!(
        parse_request(&tools, HANG_UP, &json!("")),
        Ok(ToolRequest::HangUp { reason: None })
    );
    assert!(matches!(
        parse_request(&tools, SEND_DTMF, &json!("{not json")),
        Err(ToolError::InvalidArguments { ref tool, .. }) if tool == SEND_DTMF
    ));
    assert!(matches!(
        parse_request(&tools, SEND_DTMF, &json!("[1, 2]")),
        Err(ToolError::InvalidArguments { .. })
    ));
    assert!(matches!(
        parse_request(&tools, SEND_DTMF, &json!([1, 2])),
        Err(ToolError::InvalidArguments { .. })
    ));
}

#[test]
fn dtmf_digits() {
    assert_eq!(
        parse_digits("0-9 *#abcD"),
        Ok(vec![
            Digit::D0,
            Digit::D9,
            Digit::Star,
            Digit::Hash,
            Digit::A,
            Digit::B,
            Digit::C,
            Digit::D
        ])
    );
    assert_eq!(parse_digits(&"1".repeat(64)).map(|d| d.len()), Ok(64));
    assert!(matches!(
        parse_digits(&"1".repeat(65)),
        Err(ToolError::InvalidArguments { .. })
    ));
    assert!(matches!(
        parse_digits(" - "),
        Err(ToolError::InvalidArguments { .. })
    ));
    let err = parse_digits("12,3").expect_err("comma");
    assert_eq!(
        err.to_string(),
        "invalid arguments for send_dtmf: ',' is not a phone key (use 0-9, *, #, A-D)"
    );
    assert!(matches!(
        parse_request(&all_tools(), SEND_DTMF, &json!({"digits": 12})),
        Err(ToolError::InvalidArguments { .. })
    ));
}

#[test]
fn http_and_unknown_names() {
    let tools = all_tools();
    assert_eq!(
        parse_request(&tools, "lookup_order", &json!({"order": "A1"})),
        Ok(ToolRequest::Http("lookup_order".to_owned()))
    );
    assert!(matches!(
        parse_request(&tools, "lookup_order", &json!(3)),
        Err(ToolError::InvalidArguments { .. })
    ));
    assert_eq!(
        parse_request(&tools, "nope", &json!({})),
        Ok(ToolRequest::Unknown("nope".to_owned()))
    );
    // A disabled built-in is unknown.
    let only_http = AgentTools {
        http: vec![http_tool("lookup_order")],
        ..AgentTools::default()
    };
    assert_eq!(
        parse_request(&only_http, HANG_UP, &json!({})),
        Ok(ToolRequest::Unknown(HANG_UP.to_owned()))
    );
    assert_eq!(
        ToolError::UnknownTool("nope".to_owned()).to_output(),
        r#"{"error":"there is no tool named \"nope\""}"#
    );
}

#[test]
fn validation_rejects_bad_tool_sets() {
    let dup = AgentTools::new(false, None, false, vec![http_tool("a"), http_tool("a")]);
    assert_eq!(dup, Err(ToolConfigError::DuplicateName("a".to_owned())));

    let reserved = AgentTools::new(false, None, false, vec![http_tool(HANG_UP)]);
    assert_eq!(
        reserved,
        Err(ToolConfigError::ReservedName(HANG_UP.to_owned()))
    );

    for bad in ["", "has space", "x.y", &"a".repeat(65)] {
        assert_eq!(
            AgentTools::new(false, None, false, vec![http_tool(bad)]),
            Err(ToolConfigError::InvalidName(bad.to_owned()))
        );
    }

    let mut t = http_tool("a");
    t.parameters = json!({"type": "string"});
    assert!(matches!(
        AgentTools::new(false, None, false, vec![t]),
        Err(ToolConfigError::InvalidParameters { .. })
    ));

    let mut t = http_tool("a");
    t.url = "ftp://example.com/x".to_owned();
    assert!(matches!(
        AgentTools::new(false, None, false, vec![t]),
        Err(ToolConfigError::InvalidUrl { .. })
    ));

    let mut t = http_tool("a");
    t.url = "not a url".to_owned();
    assert!(matches!(
        AgentTools::new(false, None, false, vec![t]),
        Err(ToolConfigError::InvalidUrl { .. })
    ));

    let mut t = http_tool("a");
    t.timeout = Duration::ZERO;
    assert_eq!(
        AgentTools::new(false, None, false, vec![t]),
        Err(ToolConfigError::ZeroTimeout("a".to_owned()))
    );

    let mut t = http_tool("a");
    t.headers = vec![("X-Key".to_owned(), "line\nbreak-s3cret".to_owned())];
    let err = AgentTools::new(false, None, false, vec![t]).expect_err("bad header");
    assert!(!err.to_string().contains("s3cret"), "{err}");

    let mut t = http_tool("a");
    t.description = " ".to_owned();
    assert_eq!(
        AgentTools::new(false, None, false, vec![t]),
        Err(ToolConfigError::MissingDescription("a".to_owned()))
    );

    let mut policy = targets();
    policy.targets.push(TransferTarget {
        name: "SALES".to_owned(),
        uri: "sip:x@y".to_owned(),
    });
    assert!(matches!(
        AgentTools::new(false, Some(policy), false, vec![]),
        Err(ToolConfigError::InvalidTransferTarget { .. })
    ));

    let policy = TransferPolicy {
        targets: vec![TransferTarget {
            name: "x".to_owned(),
            uri: "sip:a b".to_owned(),
        }],
        allow_any: false,
    };
    assert!(matches!(
        AgentTools::new(false, Some(policy), false, vec![]),
        Err(ToolConfigError::InvalidTransferTarget { .. })
    ));
}

#[test]
fn debug_redacts_secrets() {
    let text = format!("{:?}", http_tool("lookup_order"));
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains("pw"), "{text}");
    assert!(text.contains("Authorization: ***"), "{text}");
    assert!(
        text.contains("https://tools.example.com:8443/order?…"),
        "{text}"
    );
}

#[test]
fn outputs_are_capped_at_a_char_boundary() {
    assert_eq!(success_output(b"", false), EMPTY_BODY_OUTPUT);
    assert_eq!(success_output(b"{\"a\":1}", false), "{\"a\":1}");
    let body = "€".repeat(MAX_OUTPUT_BYTES / 3 + 1);
    let out = success_output(&body.as_bytes()[..MAX_OUTPUT_BYTES], true);
    assert!(out.len() <= MAX_OUTPUT_BYTES);
    assert!(out.ends_with(TRUNCATION_NOTE));
    let kept = out.strip_suffix(TRUNCATION_NOTE).expect("note");
    assert!(kept.chars().all(|c| c == '€'));
    assert!(kept.len() > MAX_OUTPUT_BYTES - TRUNCATION_NOTE.len() - 3);
    assert_eq!(cut_at_char_boundary("aé", 2), "a");
    assert_eq!(cut_at_char_boundary("aé", 3), "aé");
}

#[test]
fn error_outputs_are_json_objects() {
    let e = ToolError::Status {
        status: 500,
        body_excerpt: "boom".to_owned(),
    };
    let v: Value = serde_json::from_str(&e.to_output()).expect("json");
    assert_eq!(
        v,
        json!({"error": "the tool's server answered HTTP 500: boom"})
    );
    let e = ToolError::Timeout { after_ms: 200 };
    assert_eq!(
        e.to_output(),
        r#"{"error":"the tool did not answer within 200 ms"}"#
    );
}

#[test]
fn tool_call_context_from_call() {
    let call = CallContext {
        caller: "+1555".to_owned(),
        called: "100".to_owned(),
        direction: "inbound".to_owned(),
        variables: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        memory: String::new(),
        call_format: crate::agent::backend::AudioFormat::Pcmu8k,
        tools: vec![],
        history: Vec::new(),
    };
    let ctx = ToolCallContext::from_call("c1", &call);
    assert_eq!(
        serde_json::to_value(&ctx).expect("json"),
        json!({"id": "c1", "caller": "+1555", "called": "100", "direction": "inbound",
               "variables": {"k": "v"}})
    );
}
