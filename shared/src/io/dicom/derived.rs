//! The stamped file as a derived instance (PS3.3 C.7.6.1.1.2, C.12.1): new pixel data, a new
//! SOP Instance UID with the source referenced, and the derivation bookkeeping; every other
//! attribute kept byte for byte, sequence and item lengths as they were read.

use std::borrow::Cow;

use dicom_core::header::Header;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_parser::dataset::write::{DataSetWriterOptions, ExplicitLengthSqItemStrategy};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::stored::{replan, stored_value};
use super::{
    CHANGED_IF_PALETTE, CHANGED_TAGS, DicomImage, EXPLICIT_VR_LE, Photometric, dicom_err,
    first_line,
};
use crate::error::Result;

impl DicomImage {
    /// The file it was read from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The SOP Instance UID.
    pub fn sop_instance_uid(&self) -> String {
        trimmed(&self.obj, tags::SOP_INSTANCE_UID)
    }

    /// Encodes the stamped file. `new_uid` replaces the SOP Instance UID (and records the
    /// source in the Source Image Sequence) unless `None` (UIDs kept); `description` goes in
    /// front of any Derivation Description; `now` is (DA, TM, DT) for the bookkeeping.
    ///
    /// # Errors
    /// When dicom-rs cannot encode the dataset.
    pub fn encode(
        mut self,
        new_uid: Option<&str>,
        description: &str,
        now: (&str, &str, &str),
    ) -> Result<Vec<u8>> {
        let source = self.sop_instance_uid();
        // Pixel data: unchanged values keep their original words.
        let mut words: Vec<u16> = self
            .stored
            .iter()
            .enumerate()
            .map(|(i, &new)| {
                let raw = self.raw[i];
                if new == stored_value(raw, self.bits_stored, self.signed) {
                    raw
                } else if self.signed && self.bits_allocated == 16 {
                    new as i16 as u16
                } else if self.signed {
                    (new as i8 as u8).into()
                } else {
                    new as u16
                }
            })
            .collect();
        if self.planar {
            words = replan(&words, self.frames, self.rows * self.cols, true);
        }
        let empty = dicom_object::DefaultDicomObject::new_empty_with_meta(self.obj.meta().clone());
        let mut obj = std::mem::replace(&mut self.obj, empty);
        let pixel_vr = obj
            .get(tags::PIXEL_DATA)
            .map(|e| e.vr())
            .filter(|vr| {
                !self.transcoded && !self.palette_expanded && matches!(vr, VR::OW | VR::OB)
            })
            .unwrap_or(if self.bits_allocated == 16 {
                VR::OW
            } else {
                VR::OB
            });
        let value = if self.bits_allocated == 16 {
            PrimitiveValue::U16(words.into())
        } else {
            PrimitiveValue::U8(words.iter().map(|&w| w as u8).collect())
        };
        obj.put(DataElement::new(tags::PIXEL_DATA, pixel_vr, value));
        // Decoded colour is written as RGB, interleaved.
        self.describe_decoded(&mut obj, self.transcoded || self.palette_expanded);
        if self.transcoded {
            obj.update_meta(|m| m.transfer_syntax = EXPLICIT_VR_LE.to_string());
        }
        // Image Type: value 1 DERIVED, the rest kept.
        let mut image_type: Vec<String> = obj
            .get(tags::IMAGE_TYPE)
            .and_then(|e| e.to_multi_str().ok().map(Cow::into_owned))
            .unwrap_or_default();
        if image_type.len() < 2 {
            image_type = vec!["DERIVED".into(), "SECONDARY".into()];
        } else {
            image_type[0] = "DERIVED".into();
        }
        obj.put(DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(image_type.into()),
        ));
        // Enhanced multi-frame objects keep the derivation in their functional groups.
        let enhanced = obj.get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).is_some();
        let mut text = description.to_string();
        if let Some(old) = obj
            .get(tags::DERIVATION_DESCRIPTION)
            .and_then(|e| e.to_str().ok())
        {
            let old = old.trim();
            if !old.is_empty() {
                text = format!("{text} [{old}]");
            }
        }
        text.truncate(1024);
        if !enhanced {
            obj.put(DataElement::new(
                tags::DERIVATION_DESCRIPTION,
                VR::ST,
                PrimitiveValue::from(text.clone()),
            ));
        }
        // Contributing Equipment: this tool, appended.
        append_item(
            &mut obj,
            tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
            InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    VR::SQ,
                    DataSetSequence::from(vec![code("109103", "Modifying Equipment")]),
                ),
                DataElement::new(
                    tags::MANUFACTURER,
                    VR::LO,
                    PrimitiveValue::from("tracemark"),
                ),
                DataElement::new(
                    tags::MANUFACTURER_MODEL_NAME,
                    VR::LO,
                    PrimitiveValue::from("tracemark-embed"),
                ),
                DataElement::new(
                    tags::SOFTWARE_VERSIONS,
                    VR::LO,
                    PrimitiveValue::from(env!("CARGO_PKG_VERSION")),
                ),
                DataElement::new(
                    tags::CONTRIBUTION_DATE_TIME,
                    VR::DT,
                    PrimitiveValue::from(now.2),
                ),
                DataElement::new(
                    tags::CONTRIBUTION_DESCRIPTION,
                    VR::ST,
                    PrimitiveValue::from("Forensic watermark embedding"),
                ),
            ]),
        );
        // Signatures over the old pixels no longer hold.
        obj.remove_element(tags::DIGITAL_SIGNATURES_SEQUENCE);
        obj.remove_element(tags::MAC_PARAMETERS_SEQUENCE);
        let mut source_item = None;
        if let Some(uid) = new_uid {
            let class = obj
                .get(tags::SOP_CLASS_UID)
                .map(|_| trimmed(&obj, tags::SOP_CLASS_UID))
                .unwrap_or_else(|| {
                    obj.meta()
                        .media_storage_sop_class_uid()
                        .trim_end_matches('\0')
                        .to_string()
                });
            let item = InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    PrimitiveValue::from(class),
                ),
                DataElement::new(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(source),
                ),
                DataElement::new(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    VR::SQ,
                    DataSetSequence::from(vec![code(
                        "121322",
                        "Source image for image processing operation",
                    )]),
                ),
            ]);
            source_item = Some(item);
            obj.put(DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(uid),
            ));
            obj.put(DataElement::new(
                tags::INSTANCE_CREATION_DATE,
                VR::DA,
                PrimitiveValue::from(now.0),
            ));
            obj.put(DataElement::new(
                tags::INSTANCE_CREATION_TIME,
                VR::TM,
                PrimitiveValue::from(now.1),
            ));
            obj.update_meta(|m| m.media_storage_sop_instance_uid = uid.to_string());
        }
        if enhanced {
            if let Some(item) = &source_item {
                add_source_evidence(&mut obj, item);
            }
            derive_functional_groups(&mut obj, &text, source_item);
        } else if let Some(item) = source_item {
            obj.put(DataElement::new(
                tags::SOURCE_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ));
        }
        // Group lengths (gggg,0000; retired outside groups 0000 and 0002) of the groups
        // changed above would no longer hold: remove them rather than leave them wrong.
        for group in CHANGED_TAGS.iter().map(|t| t.group()) {
            obj.remove_element(Tag(group, 0x0000));
        }
        write_part10(&obj, &self.path)
    }

    /// The original's attributes as a Part 10 file without Pixel Data, Explicit VR Little
    /// Endian, describing the samples as decoded (RGB for decoded YBR JPEG and expanded
    /// PALETTE COLOR): with [`DicomImage::rebuild_native`], a compressed input restored
    /// pixel-exact.
    ///
    /// # Errors
    /// When dicom-rs cannot encode the dataset.
    pub fn native_header(&self) -> Result<Vec<u8>> {
        // Every element but the Pixel Data, which is not copied.
        let mut obj =
            dicom_object::DefaultDicomObject::new_empty_with_meta(self.obj.meta().clone());
        for e in self.obj.iter().filter(|e| e.tag() != tags::PIXEL_DATA) {
            obj.put(e.clone());
        }
        obj.update_meta(|m| m.transfer_syntax = EXPLICIT_VR_LE.to_string());
        // The samples are given interleaved.
        self.describe_decoded(&mut obj, true);
        write_part10(&obj, &self.path)
    }

    /// The pixel description of the decoded samples: an expanded PALETTE COLOR image as the
    /// RGB image it displays as (its tables removed); with `interleaved`, colour as RGB with
    /// Planar Configuration 0 (decoded YBR JPEG, planar samples given interleaved).
    fn describe_decoded(&self, obj: &mut dicom_object::DefaultDicomObject, interleaved: bool) {
        if self.palette_expanded {
            for tag in CHANGED_IF_PALETTE {
                obj.remove_element(tag);
            }
            let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
            obj.put(us(tags::SAMPLES_PER_PIXEL, 3));
            obj.put(us(tags::BITS_ALLOCATED, self.bits_allocated));
            obj.put(us(tags::BITS_STORED, self.bits_stored));
            obj.put(us(tags::HIGH_BIT, self.bits_stored - 1));
            obj.put(us(tags::PIXEL_REPRESENTATION, 0));
        }
        if interleaved && self.photometric == Photometric::Rgb {
            obj.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from("RGB"),
            ));
            obj.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
        }
    }

    /// A Part 10 file from [`DicomImage::native_header`]'s output and stored values (in
    /// this image's sample order, interleaved).
    ///
    /// # Errors
    /// When the header does not parse or dicom-rs cannot encode the result.
    pub fn rebuild_native(&self, header: &[u8], values: &[i32]) -> Result<Vec<u8>> {
        let mut obj = dicom_object::OpenFileOptions::new()
            .from_reader(std::io::Cursor::new(header.get(128..).unwrap_or_default()))
            .map_err(|e| {
                dicom_err(
                    &self.path,
                    "restore data",
                    format!("cannot parse: {}", first_line(&e.to_string())),
                )
            })?;
        let value = if self.bits_allocated == 16 {
            PrimitiveValue::U16(values.iter().map(|&v| v as u16).collect())
        } else {
            PrimitiveValue::U8(values.iter().map(|&v| v as u8).collect())
        };
        let vr = if self.bits_allocated == 16 {
            VR::OW
        } else {
            VR::OB
        };
        obj.put(DataElement::new(tags::PIXEL_DATA, vr, value));
        write_part10(&obj, &self.path)
    }
}

/// Preamble, magic, meta, then the data set with every sequence and item length as it was
/// read (dicom-rs would otherwise rewrite them all as undefined): an attribute this tool
/// does not touch keeps its encoding byte for byte. Sequences built here carry undefined
/// lengths, so no stale length is written.
fn write_part10(obj: &dicom_object::DefaultDicomObject, path: &std::path::Path) -> Result<Vec<u8>> {
    let encode_err = |e: &dyn std::fmt::Display| {
        dicom_err(
            path,
            "file",
            format!("cannot encode: {}", first_line(&e.to_string())),
        )
    };
    let uid = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let ts = TransferSyntaxRegistry
        .get(&uid)
        .ok_or_else(|| encode_err(&format!("transfer syntax {uid}")))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    obj.meta().write(&mut out).map_err(|e| encode_err(&e))?;
    let options = DataSetWriterOptions::default()
        .explicit_length_sq_item_strategy(ExplicitLengthSqItemStrategy::NoChange);
    obj.write_dataset_with_ts_options(&mut out, ts, options)
        .map_err(|e| encode_err(&e))?;
    Ok(out)
}

/// A string attribute's value without its padding ("" when absent).
fn trimmed(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// A sequence attribute's items, copied (none when absent).
fn items(obj: &InMemDicomObject, tag: Tag) -> Vec<InMemDicomObject> {
    obj.get(tag)
        .and_then(|e| e.items().map(<[InMemDicomObject]>::to_vec))
        .unwrap_or_default()
}

/// Appends `item` to a sequence attribute (created when absent), rebuilt with an undefined
/// length so that no stale length is written.
fn append_item(obj: &mut InMemDicomObject, tag: Tag, item: InMemDicomObject) {
    let mut all = items(obj, tag);
    all.push(item);
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(all)));
}

fn code(value: &str, meaning: &str) -> InMemDicomObject {
    coded(value, "DCM", meaning)
}

fn coded(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from(scheme),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ])
}

/// Enhanced multi-frame objects (PS3.3 C.7.6.16): the derivation goes into the Shared
/// Functional Groups as a Derivation Image Sequence item (description, a private code, since
/// DICOM has none for a watermark, and the source reference; empty when UIDs are kept), and
/// value 1 of every Frame Type in the functional groups becomes DERIVED, agreeing with Image
/// Type. The changed sequences are rebuilt with undefined lengths, so no stale length is
/// written.
fn derive_functional_groups(
    obj: &mut InMemDicomObject,
    description: &str,
    source: Option<InMemDicomObject>,
) {
    let mut shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    if shared.is_empty() {
        shared.push(InMemDicomObject::new_empty());
    }
    append_item(
        &mut shared[0],
        tags::DERIVATION_IMAGE_SEQUENCE,
        InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::DERIVATION_DESCRIPTION,
                VR::ST,
                PrimitiveValue::from(description),
            ),
            DataElement::new(
                tags::DERIVATION_CODE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![coded(
                    "WM1",
                    "99TRACEMARK",
                    "Forensic watermark embedding",
                )]),
            ),
            DataElement::new(
                tags::SOURCE_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(source.into_iter().collect::<Vec<_>>()),
            ),
        ]),
    );
    derive_frame_types(&mut shared[0]);
    add_coding_scheme(obj);
    obj.put(DataElement::new(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(shared),
    ));
    let mut per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let mut changed = false;
    for item in &mut per_frame {
        changed |= derive_frame_types(item);
    }
    if changed {
        obj.put(DataElement::new(
            tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(per_frame),
        ));
    }
}

/// Enhanced objects that reference a source (Derivation Image Sequence) list it in the
/// Source Image Evidence Sequence (PS3.3 Hierarchical Evidence Reference Macro: study,
/// series, instance), appended to any there; and the private coding scheme of the
/// derivation code is identified in the Coding Scheme Identification Sequence.
fn add_source_evidence(obj: &mut InMemDicomObject, source: &InMemDicomObject) {
    let reference = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(trimmed(source, tags::REFERENCED_SOP_CLASS_UID)),
        ),
        DataElement::new(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(trimmed(source, tags::REFERENCED_SOP_INSTANCE_UID)),
        ),
    ]);
    let series = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(trimmed(obj, tags::SERIES_INSTANCE_UID)),
        ),
        DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![reference]),
        ),
    ]);
    let study = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(trimmed(obj, tags::STUDY_INSTANCE_UID)),
        ),
        DataElement::new(
            tags::REFERENCED_SERIES_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![series]),
        ),
    ]);
    append_item(obj, tags::SOURCE_IMAGE_EVIDENCE_SEQUENCE, study);
}

/// The private coding scheme of the derivation code, identified (PS3.3 C.12.1.1.5), appended
/// to any schemes already listed.
fn add_coding_scheme(obj: &mut InMemDicomObject) {
    append_item(
        obj,
        tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
        InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::CODING_SCHEME_DESIGNATOR,
                VR::SH,
                PrimitiveValue::from("99TRACEMARK"),
            ),
            DataElement::new(
                tags::CODING_SCHEME_NAME,
                VR::ST,
                PrimitiveValue::from("tracemark derivation codes"),
            ),
            DataElement::new(
                tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
                VR::ST,
                PrimitiveValue::from("tracemark"),
            ),
        ]),
    );
}

/// Sets value 1 of Frame Type (0008,9007) to DERIVED in every frame type sequence of a
/// functional group item (CT, MR, ... Image Frame Type Sequence); returns whether any was.
fn derive_frame_types(group: &mut InMemDicomObject) -> bool {
    let sequences: Vec<Tag> = group
        .iter()
        .filter(|e| {
            e.items()
                .and_then(<[InMemDicomObject]>::first)
                .is_some_and(|i| i.get(tags::FRAME_TYPE).is_some())
        })
        .map(|e| e.tag())
        .collect();
    for tag in &sequences {
        let mut items = items(group, *tag);
        for item in &mut items {
            let mut values: Vec<String> = item
                .get(tags::FRAME_TYPE)
                .and_then(|e| e.to_multi_str().ok().map(Cow::into_owned))
                .unwrap_or_default();
            if let Some(first) = values.first_mut() {
                *first = "DERIVED".into();
                item.put(DataElement::new(
                    tags::FRAME_TYPE,
                    VR::CS,
                    PrimitiveValue::Strs(values.into()),
                ));
            }
        }
        group.put(DataElement::new(*tag, VR::SQ, DataSetSequence::from(items)));
    }
    !sequences.is_empty()
}

/// A new SOP Instance UID: `2.25.` and a version-8 UUID made from `seed` (PS3.5 B.2).
pub fn uid_from(seed: [u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&seed[..16]);
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_2_25_uids() {
        let u = uid_from([0xAB; 32]);
        assert!(u.starts_with("2.25.") && u.len() <= 64);
        assert!(u[5..].chars().all(|c| c.is_ascii_digit()) && !u[5..].starts_with('0'));
        assert_ne!(u, uid_from([0xAC; 32]));
    }
}
