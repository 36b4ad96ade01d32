//! Which members can take a request: the capabilities it uses, its answer length against each
//! member's `maxOutputTokens`, and its prompt (counted conservatively) plus answer against each
//! member's `contextWindow`. The decision stage keeps the ranking's order among the members that
//! fit; when the conservative count fits none, the members whose window the prompt may still
//! fit are tried largest window first (the member then says whether it fits), and only a prompt
//! certainly too long for every window is refused here.

use lookahead_api::pool::Capability;

use crate::openai::needs::{Needs, Uses};
use crate::pool::{Member, Pool};
use crate::ApiError;

/// Why a member cannot take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfit {
    /// The member does not support a capability the request uses.
    Lacks(Uses),
    /// The request asks for a longer answer than the member gives.
    AnswerLength { asked: u64, max: u32 },
    /// The prompt and answer may not fit the window by the conservative count (`certain` when
    /// even the lower bound, the prompt's words, does not).
    Window {
        needed: u64,
        window: u32,
        certain: bool,
    },
}

impl Misfit {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Misfit::Lacks(_) => "capability",
            Misfit::AnswerLength { .. } => "max_output_tokens",
            Misfit::Window { .. } => "context_window",
        }
    }

    /// The 400 a client gets when no member can take its request for this reason.
    pub fn into_error(self, member: Option<&str>) -> ApiError {
        let whom = member.map_or_else(
            || "any member of this pool".to_string(),
            |m| format!("the model {m:?}"),
        );
        match self {
            Misfit::Lacks(u) => ApiError::bad_request(
                "unsupported_parameter",
                format!(
                    "This request uses {} (`{}`), which {whom} does not support.",
                    u.capability.as_str(),
                    u.param
                ),
            )
            .with_param(u.param),
            Misfit::AnswerLength { asked, max } => ApiError::bad_request(
                "integer_above_max_value",
                format!("The answer asked for ({asked} tokens) is longer than {whom} gives (at most {max})."),
            )
            .with_param("max_tokens"),
            Misfit::Window { needed, window, .. } => ApiError::bad_request(
                "context_length_exceeded",
                format!(
                    "This request needs about {needed} tokens (prompt counted conservatively, plus the answer asked for); the largest context window of {whom} is {window} tokens. Shorten the messages or the answer."
                ),
            )
            .with_param("messages"),
        }
    }
}

/// Whether `member` can take a request needing `needs`.
pub fn check(member: &Member, needs: &Needs) -> Result<(), Misfit> {
    if let Some(u) = needs.uses.iter().find(|u| !member.supports(u.capability)) {
        return Err(Misfit::Lacks(*u));
    }
    if let (Some(asked), Some(max)) = (needs.max_output, member.max_output_tokens) {
        if asked > u64::from(max) {
            return Err(Misfit::AnswerLength { asked, max });
        }
    }
    if let Some(window) = member.context_window {
        let needed = needs.window_tokens();
        if needed > u64::from(window) {
            let certain = needs.window_tokens_at_least() > u64::from(window);
            return Err(Misfit::Window {
                needed,
                window,
                certain,
            });
        }
    }
    Ok(())
}

/// The members of `order` that can take the request, in order. When the conservative count
/// fits none, the members that may still fit, largest window first; when none can take it at
/// all, the 400 to answer (for the best-ranked member's reason).
pub fn fitting(pool: &Pool, order: &[usize], needs: &Needs) -> Result<Vec<usize>, ApiError> {
    let checks: Vec<(usize, Result<(), Misfit>)> = order
        .iter()
        .map(|&i| (i, check(&pool.members[i], needs)))
        .collect();
    let fit: Vec<usize> = checks
        .iter()
        .filter(|(_, c)| c.is_ok())
        .map(|(i, _)| *i)
        .collect();
    if !fit.is_empty() {
        return Ok(fit);
    }
    let mut maybe: Vec<(usize, u32)> = checks
        .iter()
        .filter_map(|(i, c)| match c {
            Err(Misfit::Window {
                window,
                certain: false,
                ..
            }) => Some((*i, *window)),
            _ => None,
        })
        .collect();
    if !maybe.is_empty() {
        maybe.sort_by_key(|m| std::cmp::Reverse(m.1));
        return Ok(maybe.into_iter().map(|(i, _)| i).collect());
    }
    Err(refusal(&checks))
}

/// The error for a request no member can take, for the reason closest to fitting ([`check`]
/// tests capabilities, then the answer bound, then the window): a window misfit (the largest
/// window the pool has), else an answer bound (the largest), else a missing capability.
fn refusal(checks: &[(usize, Result<(), Misfit>)]) -> ApiError {
    let misfits: Vec<Misfit> = checks.iter().filter_map(|(_, c)| c.err()).collect();
    let lacks = misfits.iter().find(|m| matches!(m, Misfit::Lacks(_)));
    let window = misfits
        .iter()
        .filter(|m| matches!(m, Misfit::Window { .. }))
        .max_by_key(|m| match m {
            Misfit::Window { window, .. } => *window,
            _ => 0,
        });
    let answer = misfits
        .iter()
        .filter(|m| matches!(m, Misfit::AnswerLength { .. }))
        .max_by_key(|m| match m {
            Misfit::AnswerLength { max, .. } => *max,
            _ => 0,
        });
    let chat = Misfit::Lacks(Uses {
        capability: Capability::Chat,
        param: "model",
    });
    window
        .or(answer)
        .or(lacks)
        .copied()
        .unwrap_or(chat)
        .into_error(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookahead_api::RouterConfig;

    fn pool() -> Pool {
        let config: RouterConfig = serde_yaml::from_str(
            r#"
members:
  - { name: small, modelId: s, baseUrl: "http://127.0.0.1:1/v1", contextWindow: 100, maxOutputTokens: 50 }
  - { name: large, modelId: l, baseUrl: "http://127.0.0.1:2/v1", contextWindow: 1000, supports: [chat] }
  - { name: tools, modelId: t, baseUrl: "http://127.0.0.1:3/v1", contextWindow: 400, supports: [tools] }
  - { name: embed, modelId: e, baseUrl: "http://127.0.0.1:4/v1", supports: [embeddings] }
policy: { method: random }
"#,
        )
        .expect("config");
        Pool::from_config(&config).expect("pool")
    }

    /// A chat request counted `prompt_tokens` (at least half of them words).
    fn chat(prompt_tokens: usize, max_output: Option<u64>, tools: bool) -> Needs {
        let mut uses = vec![Uses {
            capability: Capability::Chat,
            param: "model",
        }];
        if tools {
            uses.push(Uses {
                capability: Capability::Tools,
                param: "tools",
            });
        }
        Needs {
            uses,
            prompt_tokens,
            prompt_words: prompt_tokens / 2,
            max_output,
        }
    }

    #[test]
    fn keeps_the_ranking_among_members_that_fit() {
        let p = pool();
        assert_eq!(
            fitting(&p, &[0, 1, 2, 3], &chat(10, None, false)),
            Ok(vec![0, 1, 2])
        );
        assert_eq!(
            fitting(&p, &[2, 1, 0], &chat(300, None, false)),
            Ok(vec![2, 1])
        );
        assert_eq!(
            fitting(&p, &[0, 1, 2], &chat(10, None, true)),
            Ok(vec![0, 2])
        );
        assert_eq!(
            fitting(&p, &[0, 1], &chat(10, Some(60), false)),
            Ok(vec![1])
        );
    }

    #[test]
    fn a_prompt_that_may_fit_goes_to_the_largest_window_and_a_certain_misfit_is_refused() {
        let p = pool();
        // 1500 counted, 750 words at least: it may fit 1000, never 400 or 100.
        assert_eq!(
            fitting(&p, &[0, 2, 1], &chat(1500, None, false)),
            Ok(vec![1])
        );
        let mut wordy = chat(1100, None, false);
        wordy.prompt_words = 350;
        assert_eq!(fitting(&p, &[0, 2, 1], &wordy), Ok(vec![1, 2]));
        let e = fitting(&p, &[0, 1, 2], &chat(2500, None, false)).expect_err("too long");
        assert_eq!(
            (e.code, e.param),
            ("context_length_exceeded", Some("messages"))
        );
        assert!(e.message.contains("1000 tokens"), "{}", e.message);
    }

    #[test]
    fn a_capability_no_member_has_is_refused_naming_the_field() {
        let p = pool();
        let mut needs = chat(10, None, false);
        needs.uses.push(Uses {
            capability: Capability::Vision,
            param: "messages",
        });
        let e = fitting(&p, &[1, 2], &needs).expect_err("no vision");
        assert_eq!(
            (e.code, e.param),
            ("unsupported_parameter", Some("messages"))
        );
        assert!(e.message.contains("vision"), "{}", e.message);
        let embed = Needs {
            uses: vec![Uses {
                capability: Capability::Embeddings,
                param: "model",
            }],
            prompt_tokens: 3,
            prompt_words: 2,
            max_output: None,
        };
        assert_eq!(fitting(&p, &[0, 1, 2, 3], &embed), Ok(vec![3]));
    }
}
