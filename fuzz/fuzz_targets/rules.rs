//! Rule texts: reading, printing errors, re-reading the printed form.
#![no_main]

use connscope_rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match RuleSet::builder().add_expr("-e #1", text).build() {
        Ok(rules) => {
            for rule in rules.rules().iter().filter(|r| !r.is_empty()) {
                let printed = rule.to_string();
                let again = RuleSet::builder()
                    .add_expr("printed", &printed)
                    .build()
                    .unwrap();
                assert_eq!(again.rules()[0].to_string(), printed);
            }
        }
        Err(e) => drop(e.to_string()),
    }
});
